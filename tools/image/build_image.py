#!/usr/bin/env python3
"""Build the sidecar image (deploy/Dockerfile) with the container engine this machine has; print what it holds.

What it uses, first match wins (``IMAGE_ENGINE=docker|podman`` picks one):

1. A Docker daemon that answers (``docker info``): used as it is.
2. As a non-root user, Podman: used as it is (your storage, your registries).
3. As root with no Docker daemon (a CI machine, a sandbox): Podman with settings of its own, installed from
   Debian's packages when missing (``apt-get install podman runc``). Those settings are the ones a restricted
   machine needs and harm nothing elsewhere: ``containers.conf`` with open-file and process limits within the
   hard limits (Podman otherwise asks for more than it may: ``setrlimit RLIMIT_NOFILE: Operation not
   permitted``), ``runtime = "runc"``, ``cgroup_manager = "cgroupfs"`` and ``events_logger = "file"``; a
   private storage root, kept across runs (the image cache); no registry to search; ``--pull=never``.

The base image (``IMAGE_BASE``):

- ``python``: the official Python image the Dockerfile pins (``PYTHON_IMAGE``), pulled by the engine.
  The default with Docker or a user's Podman.
- ``debian``: made from Debian's own packages with ``mmdebstrap --variant=minbase`` (python3, python3-venv,
  ca-certificates; no recommends, no documentation), for a machine that cannot reach a registry. The
  default in case 3. The root filesystem is cached outside the clone, shared by every clone on the machine::

      ${XDG_CACHE_HOME:-~/.cache}/secretbridge/image-base-<hash>.tar

  ``<hash>`` covers everything that went into it (the recipe below, the architecture), so a change builds anew;
  ``make image IMAGE_REFRESH=1`` (``--refresh``) makes it again to pick up Debian's security updates.

The image is tagged ``localhost/secretbridge:<version>-<hash>``, ``<hash>`` covering the Dockerfile, the locks,
the package's sources and the base; an image with that tag is not built again. pip inside the build reaches the
index with the CA bundle the host's pip is configured with (``PIP_CERT`` or ``pip config``), passed as the
build secret ``pip-cert``: mounted for the install steps only, never in a layer.

Run ``python3 tools/image/build_image.py`` (or ``make image``); its last line on stdout is ``image: <name>``.
Importable: :func:`build` builds (or finds) the image, :func:`current_image` only finds it; both raise
:class:`ImageError`, whose message is one line naming the cause.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
#: What the Dockerfile copies into the build, and so what the image's tag is a hash of.
BUILD_INPUTS = ("deploy/Dockerfile", "deploy/requirements.lock", "deploy/build-requirements.lock", "pyproject.toml",
                "README.md", "LICENSE")
SOURCES = "service"
IMAGE_NAME = "localhost/secretbridge"
BASE_NAME = "localhost/secretbridge-base"

#: The Debian base: everything that decides its contents, hashed into its cache key.
DEBIAN_SUITE = "bookworm"  # the release the official image's tag names (…-slim-bookworm)
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
MMDEBSTRAP = (
    "--variant=minbase",
    f"--include={','.join(DEBIAN_PACKAGES)}",
    # merged /usr without the usrmerge package (which would pull in perl)
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
)
#: The Debian packages each part needs, installed when their command is missing (as root, with apt-get).
PODMAN_PACKAGES = {"podman": "podman", "runc": "runc"}
BASE_PACKAGES = {"mmdebstrap": "mmdebstrap"}
#: Podman asks for 65536 processes by default; more than 32768 fails where this was measured.
MAX_NPROC = 32768


class ImageError(RuntimeError):
    """The image cannot be built or found; the message is one line naming the cause."""


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "secretbridge"


def _say(message: str) -> None:
    print(f"build_image: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time on this machine (clones share the base and the storage)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- the engine ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Engine:
    """A container engine and how to call it."""

    name: str  # "docker" or "podman"
    command: tuple[str, ...]
    env: dict[str, str]
    #: Podman with this project's settings and storage (case 3): no registry, host network for the build.
    private: bool

    def run(self, *args: str, check: bool = True, capture: bool = True, timeout: float | None = None,
            ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.command, *args], env={**os.environ, **self.env}, text=True,
                              capture_output=capture, timeout=timeout, check=False)
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout or "").strip().splitlines()
            raise ImageError(f"{self.name} {args[0]} failed ({done.returncode}): {detail[-1] if detail else ''}")
        return done

    def popen_args(self, *args: str) -> list[str]:
        return [*self.command, *args]

    def exists(self, ref: str) -> bool:
        if self.name == "podman":
            return self.run("image", "exists", ref, check=False).returncode == 0
        return self.run("image", "inspect", ref, check=False).returncode == 0

    def inspect(self, ref: str) -> dict[str, Any]:
        """The engine's `image inspect` of `ref` (Config holds User, ExposedPorts, Entrypoint, Cmd, Volumes)."""
        found: dict[str, Any] = json.loads(self.run("image", "inspect", ref).stdout)[0]
        return found


def _ensure_commands(packages: dict[str, str], install: bool = True) -> None:
    """Install the Debian packages whose command is missing (root and apt-get only), else say what is missing."""
    missing = {command: package for command, package in packages.items()
               if shutil.which(command) is None and not Path("/usr/sbin", command).exists()}
    if not missing:
        return
    names = sorted(set(missing.values()))
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ImageError(f"{', '.join(missing)} not found: install {' '.join(names)}")
    _say(f"installing {' '.join(names)} from Debian's packages")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock_wait = ["-o", "DPkg::Lock::Timeout=600"]
    # A source that cannot be refreshed (a third-party repository) is no reason to stop: the install says
    # whether what it needs was found.
    update = subprocess.run(["apt-get", *lock_wait, "update", "-qq"], env=env, capture_output=True, text=True,
                            check=False)
    if update.returncode != 0:
        _say(f"apt-get update: {(update.stderr or update.stdout).strip().splitlines()[-1:]}")
    command = ["apt-get", *lock_wait, "install", "-y", "-qq", "--no-install-recommends", *names]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise ImageError(f"apt-get install {' '.join(names)} failed: {lines[-1] if lines else done.returncode}")


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _hard_limit(resource: int, ceiling: int) -> int:
    import resource as res

    hard = res.getrlimit(resource)[1]
    return ceiling if hard == res.RLIM_INFINITY else min(hard, ceiling)


def private_podman(install: bool = True) -> Engine:
    """Podman with this project's configuration and storage under the cache folder (case 3)."""
    import resource

    _ensure_commands(PODMAN_PACKAGES, install)
    home = cache_dir() / "containers"
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    # Podman's run-time state (locks, mounts) belongs on a folder that a reboot empties; one per storage root.
    runroot = (Path("/run") if os.geteuid() == 0 else home) / f"secretbridge-containers-{_digest(str(home))}"
    nofile = _hard_limit(resource.RLIMIT_NOFILE, 1 << 20)
    nproc = _hard_limit(resource.RLIMIT_NPROC, MAX_NPROC)
    files = {
        "containers.conf": (
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            "[engine]\n"
            'runtime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        ),
        "storage.conf": (
            f'[storage]\ndriver = "overlay"\ngraphroot = "{home / "storage"}"\n'
            f'runroot = "{runroot}"\n'
        ),
        # Short names resolve nowhere: nothing is ever pulled.
        "registries.conf": "unqualified-search-registries = []\n",
    }
    for name, text in files.items():
        path = conf / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    env = {
        "CONTAINERS_CONF": str(conf / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
    }
    return Engine("podman", ("podman",), env, private=True)


def find_engine(choice: str | None = None, install: bool = True) -> Engine:
    """The engine to build and run with (module docstring); `choice` or IMAGE_ENGINE names one.

    `install`: whether a missing Podman may be installed (case 3).
    """
    choice = choice or os.environ.get("IMAGE_ENGINE") or None
    if choice not in (None, "docker", "podman"):
        raise ImageError(f"IMAGE_ENGINE={choice!r}: expected docker or podman")
    if choice == "docker" or (choice is None and _docker_answers()):
        if not _docker_answers():
            raise ImageError("IMAGE_ENGINE=docker, but `docker info` fails: is the Docker daemon running?")
        return Engine("docker", ("docker",), {}, private=False)
    if os.geteuid() != 0:
        if shutil.which("podman") is None:
            raise ImageError("neither a Docker daemon (`docker info`) nor podman found: install one of them")
        return Engine("podman", ("podman",), {}, private=False)
    return private_podman(install)


# -- the base -----------------------------------------------------------------------------------------------


def debian_base_recipe() -> dict[str, object]:
    return {"suite": DEBIAN_SUITE, "mmdebstrap": list(MMDEBSTRAP), "arch": platform.machine(), "format": 1}


def _digest(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def debian_base(engine: Engine, refresh: bool = False) -> str:
    """The Debian base in `engine`, made (and cached) when missing; its image name."""
    key = _digest(debian_base_recipe())
    ref = f"{BASE_NAME}:{DEBIAN_SUITE}-{key}"
    tarball = cache_dir() / f"image-base-{key}.tar"
    with _locked(cache_dir() / "image-base.lock"):
        if refresh or not tarball.exists():
            _ensure_commands(BASE_PACKAGES)
            _say(f"making the base from Debian {DEBIAN_SUITE}'s packages (mmdebstrap) into {tarball}")
            partial, started = tarball.with_suffix(".tmp"), time.monotonic()
            done = subprocess.run(["mmdebstrap", "--quiet", "--format=tar", *MMDEBSTRAP, DEBIAN_SUITE, str(partial)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                partial.unlink(missing_ok=True)
                lines = done.stderr.strip().splitlines()
                raise ImageError(f"mmdebstrap failed: {lines[-1] if lines else done.returncode}")
            partial.rename(tarball)
            _say(f"base made in {time.monotonic() - started:.0f} s ({tarball.stat().st_size / 1e6:.0f} MB)")
            if engine.exists(ref):
                engine.run("rmi", "--force", ref, check=False)
        if not engine.exists(ref):
            _say(f"importing the base as {ref}")
            engine.run("import", "--change", 'CMD ["python3"]', str(tarball), ref)
    return ref


# -- the image ----------------------------------------------------------------------------------------------


def version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def inputs_digest(base: str) -> str:
    """A hash of what the build copies in, and of the base it builds on."""
    digest = hashlib.sha256(base.encode())
    files = [REPO / name for name in BUILD_INPUTS]
    files += sorted(p for p in (REPO / SOURCES).rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p))
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def pip_cert() -> str | None:
    """The CA bundle the host's pip trusts, if one is configured (the build's pip needs the same)."""
    configured = os.environ.get("PIP_CERT")
    if not configured:
        done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                              check=False)
        found = re.search(r"^\S*\.cert='([^']+)'", done.stdout, re.M)
        configured = found[1] if found else None
    return configured if configured and Path(configured).is_file() else None


def default_base(engine: Engine) -> str:
    return "debian" if engine.private else "python"


def base_ref(engine: Engine, base: str | None, refresh: bool = False) -> str | None:
    """The PYTHON_IMAGE build argument (None: the Dockerfile's pinned default)."""
    base = base or os.environ.get("IMAGE_BASE") or default_base(engine)
    if base == "debian":
        return debian_base(engine, refresh)
    if base == "python":
        if engine.private:
            raise ImageError("IMAGE_BASE=python needs a registry; this engine pulls nothing (use IMAGE_BASE=debian)")
        return None
    raise ImageError(f"IMAGE_BASE={base!r}: expected python or debian")


def image_ref(engine: Engine, base: str | None) -> str:
    return f"{IMAGE_NAME}:{version()}-{inputs_digest(base or 'python')}"


def build(engine: Engine | None = None, base: str | None = None, refresh: bool = False) -> tuple[Engine, str]:
    """Build the image unless an image of the same inputs exists; (engine, image name)."""
    engine = engine or find_engine()
    with _locked(cache_dir() / "image-build.lock"):
        python_image = base_ref(engine, base, refresh)
        ref = image_ref(engine, python_image)
        if engine.exists(ref) and not refresh:
            engine.run("tag", ref, f"{IMAGE_NAME}:{version()}")  # the plain tag names the current sources' image
            return engine, ref
        args = ["build", "--file", str(DOCKERFILE)]
        if python_image:
            args += ["--build-arg", f"PYTHON_IMAGE={python_image}"]
        if engine.private:
            args += ["--pull=never", "--network=host"]
        cert = pip_cert()
        if cert:
            args += ["--secret", f"id=pip-cert,src={cert}"]
        _say(f"building {ref} with {engine.name}")
        started = time.monotonic()
        # The build stage gets a name of its own so that pruning keeps its cached layers (the locked dependencies).
        for extra in (["--target", "build", "--tag", f"{IMAGE_NAME}-build:cache"], ["--tag", ref]):
            done = subprocess.run(engine.popen_args(*args, *extra, str(REPO)), env={**os.environ, **engine.env},
                                  stdout=sys.stderr, check=False)
            if done.returncode != 0:
                raise ImageError(f"{engine.name} build failed ({done.returncode}); its output is above")
        _say(f"built in {time.monotonic() - started:.0f} s")
        engine.run("tag", ref, f"{IMAGE_NAME}:{version()}")
        if engine.private:
            _prune(engine, keep=ref)
    return engine, ref


def _prune(engine: Engine, keep: str, kept: int = 3) -> None:
    """Drop all but the newest few images of ours, then what nothing refers to (the storage is a cache)."""
    listed = engine.run("images", "--format", "{{.Repository}}:{{.Tag}} {{.CreatedAt}}", IMAGE_NAME, check=False)
    tags = [line.split(" ", 1) for line in listed.stdout.splitlines() if line.startswith(f"{IMAGE_NAME}:")]
    ours = sorted((created, tag) for tag, created in tags if re.search(r"-[0-9a-f]{12}$", tag))
    for _, tag in ours[:-kept]:
        if tag != keep:
            engine.run("rmi", tag, check=False)  # one a test still runs stays
    engine.run("image", "prune", "--force", check=False)


def current_image(engine: Engine | None = None, base: str | None = None) -> tuple[Engine, str]:
    """The image of the current sources, if built; raises ImageError saying how to build it."""
    engine = engine or find_engine(install=False)
    base = base or os.environ.get("IMAGE_BASE") or default_base(engine)
    if base == "debian":
        key = _digest(debian_base_recipe())
        python_image: str | None = f"{BASE_NAME}:{DEBIAN_SUITE}-{key}"
    else:
        python_image = None
    ref = image_ref(engine, python_image)
    if not engine.exists(ref):
        raise ImageError(f"no image {ref} for the current sources")
    return engine, ref


# -- what it holds -------------------------------------------------------------------------------------------


def describe(engine: Engine, ref: str) -> list[str]:
    """Lines saying the image's name, size and the packages it holds."""
    info = engine.inspect(ref)
    script = ("import importlib.metadata as m; "
              "print('\\n'.join(sorted(f'{d.name}=={d.version}' for d in m.distributions())))")
    run = ["run", "--rm", "--network=none", *(["--pull=never"] if engine.private else [])]
    python = engine.run(*run, "--entrypoint", "/opt/secretbridge/bin/python", ref, "-c", script).stdout.split()
    debian = engine.run(*run, "--entrypoint", "dpkg-query", ref, "-W", "-f", "${Package}\n").stdout.split()
    return [
        f"size: {info['Size'] / 1e6:.1f} MB ({info['Size']} bytes)",
        f"python packages ({len(python)}): {' '.join(python)}",
        f"debian packages: {len(debian)} (dpkg-query -W)",
        f"image: {ref}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", choices=["python", "debian"], help="the base image (default: IMAGE_BASE, else "
                        "debian for Podman run by this script, python otherwise)")
    parser.add_argument("--engine", choices=["docker", "podman"], help="default: IMAGE_ENGINE, else what is found")
    parser.add_argument("--refresh", action="store_true", help="make the Debian base and the image again")
    parser.add_argument("--quiet", action="store_true", help="print only the image's name")
    args = parser.parse_args(argv)
    try:
        engine, ref = build(find_engine(args.engine), args.base, args.refresh or os.environ.get("IMAGE_REFRESH") == "1")
        lines = [f"image: {ref}"] if args.quiet else describe(engine, ref)
    except (ImageError, OSError, subprocess.SubprocessError) as err:
        print(f"build_image: {err}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
