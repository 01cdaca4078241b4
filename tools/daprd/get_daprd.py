#!/usr/bin/env python3
"""Find or build the daprd that secretbridge is tested against; print its absolute path last on stdout.

Where the binary comes from, first match wins:

1. ``$DAPRD``, if set: it must name an executable file. Used as given, whatever its version.
2. ``~/.dapr/bin/daprd`` (what ``dapr init`` installs), if its ``--version`` is the pinned version.
3. A build of the pinned release, cached outside the clone and shared by every clone on the machine::

       ${XDG_CACHE_HOME:-~/.cache}/secretbridge/daprd-<version>-<hash>/daprd

   ``<hash>`` is a short SHA-256 of the build inputs (go.mod, go.sum, main.go, components/secretstores.go, the
   version, the Go version and platform, and the build flags below), so changing any of them builds anew. The
   first use compiles it from the Go module proxy with the local Go toolchain; later uses find it at once.

The pinned version is the ``github.com/dapr/dapr`` requirement in tools/daprd/go.mod; nothing else names it. It is
the newest release the Go module proxy serves whole, and the one ``make test`` runs against. Earlier releases that
the version matrix (``make compat``) still runs each keep their own go.mod and go.sum in
``tools/daprd/releases/<version>/``; that folder is the list (:func:`releases`), and ``--release VERSION`` finds or
builds one of them the same way (same main.go and registration, same cache).

How the build works: tools/daprd is a Go module whose main.go calls dapr's ``cmd/daprd/app.Run()``. Upstream's
``cmd/daprd/components`` package registers built-in components only under ``-tags stablecomponents`` (hundreds
of SDKs) and otherwise compiles ``zz_notag.go``, which panics. This build swaps that one file for
components/secretstores.go (registering ``secretstores.azure.keyvault`` and ``secretstores.local.file``) with
``go build -overlay``. Go refuses overlays on files beneath GOMODCACHE, so the build reaches dapr's module
through a symlink in a scratch directory: a throwaway copy of go.mod (``-modfile``) adds
``replace github.com/dapr/dapr => <scratch>/dapr``, the symlink points at the verified module in the module
cache, and the overlay names ``<scratch>/dapr/cmd/daprd/components/zz_notag.go``. The module cache is never
written to. The binary is built with ``CGO_ENABLED=0 -trimpath`` and ``-ldflags "-s -w -X ..."`` setting the
version (see LDFLAGS), checked with ``--version``, and renamed into place, under a lock file so concurrent
runs build it once.

Run ``python3 tools/daprd/get_daprd.py`` (or ``make daprd``). Importable: :func:`find_daprd` returns the path or
raises :class:`DaprdError`, whose message is one line naming the cause.

After changing the pinned version, ``python3 tools/daprd/get_daprd.py --resolve`` rewrites go.mod's requirement
list and go.sum for it (``go mod tidy`` cannot: it resolves every build tag, i.e. every component of dapr).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

MODULE_DIR = Path(__file__).resolve().parent
GO_MOD = MODULE_DIR / "go.mod"
GO_SUM = MODULE_DIR / "go.sum"
MAIN_GO = MODULE_DIR / "main.go"
REGISTRATION = MODULE_DIR / "components" / "secretstores.go"
#: Build inputs every release shares (each release adds its own go.mod and go.sum).
SHARED_INPUTS = (MAIN_GO, REGISTRATION)
#: One folder per earlier release the version matrix runs, named by version, holding its go.mod and go.sum.
RELEASES_DIR = MODULE_DIR / "releases"

DAPR_MODULE = "github.com/dapr/dapr"
#: The file of dapr's cmd/daprd/components package that REGISTRATION stands in for.
REPLACED_FILE = "cmd/daprd/components/zz_notag.go"
BUILD_FLAGS = ("-trimpath", "-buildvcs=false")
#: As upstream's release builds: the version for ``--version`` and for the ``ver`` field of every log line.
LDFLAGS = (
    "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version={version} -X github.com/dapr/kit/logger.DaprVersion={version}"
)
#: Added to the hash so that a change to how the binary is built builds it anew.
RECIPE = f"CGO_ENABLED=0 {' '.join(BUILD_FLAGS)} -ldflags '{LDFLAGS}' overlay:{REPLACED_FILE}"

_REQUIRE = re.compile(rf"^\s*(?:require\s+)?{re.escape(DAPR_MODULE)}\s+v(\S+)", re.MULTILINE)
_GO_LINE = re.compile(r"^go\s+(\S+)", re.MULTILINE)
_REFUSED = re.compile(r"(?P<module>\S+@v\S+): reading (?P<url>\S+): (?P<status>\d{3}\b.*)")
_UNREACHABLE = ("dial tcp", "no such host", "connection refused", "i/o timeout", "TLS handshake", "network is")


class DaprdError(RuntimeError):
    """daprd could not be found or built. ``str()`` is one line naming the cause."""


@dataclasses.dataclass(frozen=True)
class Release:
    """A daprd release this project builds: its version and the go.mod/go.sum that pin its whole build."""

    version: str
    go_mod: Path
    go_sum: Path

    @property
    def pinned(self) -> bool:
        """Whether this is the pin (tools/daprd/go.mod), the release ``make test`` runs against."""
        return self.go_mod == GO_MOD


def _release_in(folder: Path) -> Release:
    go_mod = folder / "go.mod"
    match = _REQUIRE.search(go_mod.read_text())
    if match is None:
        raise DaprdError(f"{go_mod} has no 'require {DAPR_MODULE} v<version>' line")
    return Release(match.group(1), go_mod, folder / "go.sum")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in re.split(r"[.\-]", version))


def pinned_version() -> str:
    """The daprd version this project runs against, e.g. ``"1.18.2"``: the dapr requirement in go.mod."""
    return _release_in(MODULE_DIR).version


def releases() -> list[Release]:
    """Every release the version matrix runs: the pin first, then the kept earlier ones, newest first."""
    kept: list[Release] = []
    if RELEASES_DIR.is_dir():
        for folder in sorted(RELEASES_DIR.iterdir()):
            if not (folder / "go.mod").is_file():
                continue
            found = _release_in(folder)
            if found.version != folder.name:
                raise DaprdError(f"{found.go_mod} requires {DAPR_MODULE} v{found.version}, but its folder says "
                                 f"{folder.name}")
            kept.append(found)
    pin = _release_in(MODULE_DIR)
    return [pin, *sorted((r for r in kept if r.version != pin.version), key=lambda r: _version_key(r.version),
                         reverse=True)]


def release(version: str | None = None) -> Release:
    """The release named ``version`` (``None``: the pin); an unknown one is an error listing the known ones."""
    known = releases()
    if version is None:
        return known[0]
    for candidate in known:
        if candidate.version == version.removeprefix("v"):
            return candidate
    raise DaprdError(f"daprd {version} is not a release this project builds (known: "
                     f"{', '.join(r.version for r in known)}; see tools/daprd/README.md to add one)")


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/secretbridge`` (a relative XDG_CACHE_HOME is ignored, as the spec says)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "secretbridge"


def inputs_hash(version: str, go_env: str, of: Release | None = None) -> str:
    """Short SHA-256 over the build inputs of release ``of`` (default: the pin), the version, the Go toolchain
    (``go_env``) and the recipe. Files are named as in the pin's folder, so a release hashes the same wherever
    its go.mod is kept."""
    chosen = of or release()
    digest = hashlib.sha256()
    for part in (version.encode(), go_env.encode(), RECIPE.encode()):
        digest.update(len(part).to_bytes(8, "big") + part)
    for path, name in ((chosen.go_mod, "go.mod"), (chosen.go_sum, "go.sum"),
                       *((p, p.relative_to(MODULE_DIR).as_posix()) for p in SHARED_INPUTS)):
        data = path.read_bytes()
        digest.update(len(name).to_bytes(8, "big") + name.encode() + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:12]


def cached_path(go: str | None = None, version: str | None = None) -> Path:
    """Where the build of a release (default: the pin) with this Go toolchain lives (whether or not it exists)."""
    go = go or _go_tool()
    chosen = release(version)
    digest = inputs_hash(chosen.version, _go_env(go), chosen)
    return cache_root() / f"daprd-{chosen.version}-{digest}" / "daprd"


def find_daprd(*, build: bool = True, progress: bool = True, version: str | None = None) -> Path:
    """Return the absolute path of the daprd to use, building it first if needed (see the module docstring).

    ``version`` picks one of :func:`releases` (default: the pin; then ``$DAPRD`` is not consulted, since the
    caller asked for that release). ``build=False`` raises instead of compiling when no usable binary exists.
    ``progress`` writes what is happening to stderr. Raises :class:`DaprdError` (a one-line cause) when no
    daprd can be had.
    """
    log = _Log(sys.stderr if progress else None)
    explicit = os.environ.get("DAPRD", "")
    if explicit and version is None:
        return _explicit(explicit)

    chosen = release(version)
    version = chosen.version
    installed = Path.home() / ".dapr" / "bin" / "daprd"
    if _is_executable(installed):
        reported = _reported_version(installed)
        if reported == version:
            return installed
        log.line(f"not using {installed}: it reports version {reported or '?'}, this project pins {version}")

    go = _go_tool()
    target = cached_path(go, version)
    if _is_executable(target):
        return target
    if not build:
        how = "`make daprd`" if chosen.pinned else f"`python3 tools/daprd/get_daprd.py --release {version}`"
        raise DaprdError(f"daprd {version} is not built yet ({target}); run {how}")

    target.parent.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent.with_name(target.parent.name + ".lock"), log):
        if _is_executable(target):  # another run built it while this one waited
            return target
        _build(go, chosen, target, log)
    return target


def resolve(*, progress: bool = True, version: str | None = None) -> None:
    """Rewrite go.mod and go.sum from scratch for a release (default: the pin; for maintainers, after changing
    it). A ``version`` that is not kept yet gets its folder under tools/daprd/releases/.

    Starts from a go.mod holding only the dapr requirement (and dapr's ``go`` line), loads the same package
    graph as the build (with the overlay) under ``-mod=mod``, and writes back what Go added, without the
    build-only ``replace``. Downloads modules but compiles nothing.
    """
    log = _Log(sys.stderr if progress else None)
    go = _go_tool()
    if version is None or version.removeprefix("v") == pinned_version():
        target = release()
    else:
        version = version.removeprefix("v")
        folder = RELEASES_DIR / version
        target = Release(version, folder / "go.mod", folder / "go.sum")
    version = target.version
    with tempfile.TemporaryDirectory(prefix="secretbridge-daprd-resolve-") as tmp:
        scratch = Path(tmp)
        log.line(f"downloading {DAPR_MODULE} v{version}…")
        # From outside any module, so the download is checked against the checksum database, not go.sum.
        info = _download_dapr(go, version, cwd=scratch)
        dapr_go = _GO_LINE.search(Path(info["GoMod"]).read_text())
        header = _GO_MOD_HEADER if target.pinned else _KEPT_HEADER.format(version=version)
        fresh = header + (
            f"module {_module_path()}\n\ngo {dapr_go.group(1) if dapr_go else '1.24'}\n\n"
            f"require {DAPR_MODULE} v{version}\n"
        )
        work = _prepare(scratch, Path(info["Dir"]), fresh, "")
        log.line("resolving the modules the build needs…")
        _go(go, ["list", "-mod=mod", *work.flags, "-deps", "-f", "{{.ImportPath}}", "."],
            on_line=log.counter("downloading modules", r"^go: downloading "))
        replace = f"replace {DAPR_MODULE} =>"
        kept = "\n".join(line for line in work.go_mod.read_text().splitlines()
                         if line.strip() != _BUILD_ONLY and not line.strip().startswith(replace))
        kept = re.sub(r"\n{3,}", "\n\n", kept)
        sums = set(work.go_sum.read_text().splitlines())
        sums |= {f"{DAPR_MODULE} v{version} {info['Sum']}", f"{DAPR_MODULE} v{version}/go.mod {info['GoModSum']}"}
        target.go_mod.parent.mkdir(parents=True, exist_ok=True)
        target.go_mod.write_text(kept.rstrip("\n") + "\n")
        target.go_sum.write_text("".join(f"{line}\n" for line in sorted(s for s in sums if s.strip())))
    log.line(f"rewrote {target.go_mod} and {target.go_sum} for daprd {version}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the daprd path (last line of stdout), or one error line on stderr and exit 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-build", action="store_true", help="fail instead of compiling daprd")
    parser.add_argument("--resolve", action="store_true", help="rewrite go.mod/go.sum for the pinned version")
    parser.add_argument("--release", metavar="VERSION",
                        help="another release the version matrix runs (tools/daprd/releases/VERSION)")
    parser.add_argument("--releases", action="store_true", help="print every release built here, pin first")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    try:
        if args.releases:
            print("\n".join(r.version for r in releases()))
            return 0
        if args.resolve:
            resolve(progress=not args.quiet, version=args.release)
            return 0
        path = find_daprd(build=not args.no_build, progress=not args.quiet, version=args.release)
    except DaprdError as exc:
        print(f"get_daprd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("get_daprd: interrupted", file=sys.stderr)
        return 130
    print(path)
    return 0


# --- internals -------------------------------------------------------------------------------------------


class _Log:
    """Progress on stderr: whole lines, and counters that rewrite one line on a terminal."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.tty = bool(stream and stream.isatty())
        self._open = False  # a counter line is on screen without its newline

    def line(self, text: str) -> None:
        if self.stream is None:
            return
        if self._open:
            self.stream.write("\n")
            self._open = False
        self.stream.write(f"get_daprd: {text}\n")
        self.stream.flush()

    def counter(self, label: str, pattern: str, total: int = 0, every: int = 50) -> Callable[[str], None]:
        """A line callback counting the lines that match ``pattern``, shown as ``label… n[/total]``."""
        regex = re.compile(pattern)
        count = 0

        def on_line(text: str) -> None:
            nonlocal count
            if self.stream is None or not regex.search(text):
                return
            count += 1
            shown = f"{label}… {count}" + (f"/{total}" if total else "")
            if self.tty:
                self.stream.write(f"\rget_daprd: {shown}")
                self.stream.flush()
                self._open = True
            elif count % every == 0:
                self.line(shown)

        return on_line


_BUILD_ONLY = "// Build-only, written by get_daprd.py:"
_GO_MOD_HEADER = """\
// The Go module that builds secretbridge's daprd. The github.com/dapr/dapr requirement is the pinned daprd
// version, and the only place it is named. To change it, edit that version here and run
// `python3 tools/daprd/get_daprd.py --resolve`, which rewrites this file and go.sum (`go mod tidy` would
// resolve every build tag, i.e. all of dapr's components). The replace directives of dapr's own go.mod are
// not copied: none of the modules they name is compiled into this build, which links only the packages
// daprd's runtime and the two registered secret stores import.

"""

_KEPT_HEADER = """\
// An earlier daprd release that secretbridge's version matrix (`make compat`) still runs. The pin, the release
// `make test` runs, is in ../../go.mod. This folder's name and the github.com/dapr/dapr requirement below must
// agree; `python3 tools/daprd/get_daprd.py --resolve --release {version}` rewrites this file and go.sum.

"""


class _Work:
    """The scratch directory of one build: go.mod/go.sum copies with the replace, the symlink, the overlay."""

    def __init__(self, scratch: Path) -> None:
        self.link = scratch / "dapr"
        self.go_mod = scratch / "go.mod"
        self.go_sum = scratch / "go.sum"
        self.overlay = scratch / "overlay.json"
        self.flags = [f"-modfile={self.go_mod}", f"-overlay={self.overlay}"]


def _prepare(scratch: Path, dapr_dir: Path, go_mod: str, go_sum: str) -> _Work:
    """Write the scratch go.mod (plus the replace through the symlink), go.sum and overlay.json."""
    work = _Work(scratch)
    work.link.symlink_to(dapr_dir, target_is_directory=True)
    work.go_mod.write_text(f"{go_mod.rstrip()}\n\n{_BUILD_ONLY}\nreplace {DAPR_MODULE} => {work.link}\n")
    work.go_sum.write_text(go_sum)
    work.overlay.write_text(json.dumps({"Replace": {str(work.link / REPLACED_FILE): str(REGISTRATION)}}, indent=1))
    return work


def _module_path() -> str:
    match = re.search(r"^module\s+(\S+)", GO_MOD.read_text(), re.MULTILINE)
    return match.group(1) if match else "secretbridge/tools/daprd"


def _build(go: str, chosen: Release, target: Path, log: _Log) -> None:
    version = chosen.version
    started = time.monotonic()
    log.line(f"building daprd {version} into {target.parent} (once per machine; takes minutes)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{target.parent.name}.tmp-", dir=target.parent.parent) as tmp:
        scratch = Path(tmp)
        log.line(f"downloading {DAPR_MODULE} v{version}…")
        info = _download_dapr(go, version, cwd=chosen.go_mod.parent)  # checked against that release's go.sum
        work = _prepare(scratch, Path(info["Dir"]), chosen.go_mod.read_text(), chosen.go_sum.read_text())

        log.line("downloading modules…")
        listed = _go(go, ["list", *work.flags, "-deps", "-f", "{{.ImportPath}}", "."],
                     on_line=log.counter("downloading modules", r"^go: downloading "))
        packages = len(listed.stdout.split())

        log.line(f"compiling up to {packages} packages (fewer if Go's build cache has some)…")
        binary = scratch / "daprd"
        _go(go, ["build", *work.flags, *BUILD_FLAGS, "-v", "-ldflags", LDFLAGS.format(version=version),
                 "-o", str(binary), "."],
            on_line=log.counter("compiling", r"^[\w.\-~/]+$", total=packages))
        reported = _reported_version(binary)
        if reported != version:
            raise DaprdError(f"the daprd just built reports version {reported or '?'}, expected {version}")
        os.replace(binary, target)  # atomic: other runs see no binary or a whole one
    size = target.stat().st_size / 2**20
    log.line(f"built daprd {version} ({size:.0f} MiB) in {_duration(time.monotonic() - started)}")


def _download_dapr(go: str, version: str, cwd: Path) -> dict[str, str]:
    """``go mod download -json`` of dapr itself: its directory in the module cache, go.mod and checksums."""
    args = ["mod", "download", "-json", f"{DAPR_MODULE}@v{version}"]
    out = _go(go, args, cwd=cwd, check=False)
    try:
        info = json.loads(out.stdout)
    except json.JSONDecodeError:
        info = {"Error": "\n".join(out.stderr)}
    if info.get("Error") or not info.get("Dir"):
        lines = str(info.get("Error", "")).splitlines() or out.stderr
        _save_log(args, lines)
        raise DaprdError(_explain(lines) or f"cannot download {DAPR_MODULE}@v{version}")
    return {key: str(info.get(key, "")) for key in ("Dir", "GoMod", "Sum", "GoModSum")}


@dataclasses.dataclass
class _GoOutput:
    stdout: str
    stderr: list[str]


def _go(go: str, args: list[str], *, cwd: Path = MODULE_DIR, on_line: Callable[[str], None] | None = None,
        check: bool = True) -> _GoOutput:
    """Run ``go args`` in ``cwd``, streaming stderr lines to ``on_line``; raise DaprdError on failure."""
    env = dict(os.environ, CGO_ENABLED="0", GOWORK="off", GOFLAGS="")
    lines: list[str] = []
    with tempfile.TemporaryFile("w+") as stdout:
        with subprocess.Popen([go, *args], cwd=cwd, env=env, stdout=stdout, stderr=subprocess.PIPE,
                              text=True) as proc:
            assert proc.stderr is not None
            for raw in proc.stderr:
                lines.append(raw.rstrip("\n"))
                if on_line is not None:
                    on_line(lines[-1])
        stdout.seek(0)
        output = _GoOutput(stdout.read(), lines)
    if check and proc.returncode != 0:
        _save_log(args, lines)
        raise DaprdError(_explain(lines) or f"`go {args[0]}` failed with exit code {proc.returncode}")
    return output


def _save_log(args: list[str], lines: list[str]) -> None:
    """Keep the full output of a failed go command, for the one-line error to point at."""
    with contextlib.suppress(OSError):
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        (root / "daprd-build-failure.log").write_text("$ go " + " ".join(args) + "\n" + "\n".join(lines) + "\n")


def _explain(lines: Sequence[str]) -> str:
    """One line naming the cause of a go command's failure, from its stderr."""
    where = f" (full output: {cache_root() / 'daprd-build-failure.log'})"
    for i, line in enumerate(lines):
        refused = _REFUSED.search(line)
        if refused:
            detail = refused["status"].strip()
            following = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if following.startswith("server response:"):
                detail += ": " + following.removeprefix("server response:").strip()
            proxy = os.environ.get("GOPROXY") or "https://proxy.golang.org"
            return f"the Go module proxy ({proxy}) refused {refused['module']}: {detail}"
    for line in lines:
        if any(marker in line for marker in _UNREACHABLE):
            return f"cannot reach the Go module proxy: {line.strip()}"
    for line in lines:
        if "updates to go.mod needed" in line or "missing go.sum entry" in line:
            said = re.sub(r";\s*to update it:$", "", line.strip())
            return (f"tools/daprd/go.mod and go.sum do not match the pinned version ({said}); run "
                    "`python3 tools/daprd/get_daprd.py --resolve`" + where)
    for line in lines:
        if "checksum mismatch" in line or "SECURITY ERROR" in line:
            return f"a module does not match its checksum: {line.strip()}" + where
    for line in lines:
        if line.startswith("go: ") and not line.startswith("go: downloading"):
            return line.strip() + where
    errors = [line.strip() for line in lines if ": " in line and not line.startswith("go: downloading")]
    return errors[0] + where if errors else ""


@contextlib.contextmanager
def _locked(path: Path, log: _Log) -> Iterator[None]:
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.line(f"another run is building daprd; waiting for it (lock {path})…")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _explicit(value: str) -> Path:
    """$DAPRD: a path (or a command name looked up on PATH) that must be an executable file."""
    found = shutil.which(value) if os.sep not in value else value
    path = Path(os.path.abspath(os.path.expanduser(found or value)))
    if not _is_executable(path):
        raise DaprdError(f"DAPRD={value} is not an executable file")
    return path


def _go_tool() -> str:
    go = shutil.which("go")
    if go is None:
        needed = _GO_LINE.search(GO_MOD.read_text())
        raise DaprdError(
            f"the Go toolchain is not installed ('go' is not on PATH): install Go "
            f"{needed.group(1) if needed else ''} or newer to build daprd, or set DAPRD to a daprd binary"
        )
    return go


def _go_env(go: str) -> str:
    """GOVERSION, GOOS and GOARCH of the toolchain: part of the build hash."""
    try:
        done = subprocess.run([go, "env", "GOVERSION", "GOOS", "GOARCH"], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, GOWORK="off", GOFLAGS=""), cwd=MODULE_DIR)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DaprdError(f"cannot run the Go toolchain ({go}): {exc}") from None
    if done.returncode != 0:
        raise DaprdError(f"`go env` failed: {(done.stderr.strip().splitlines() or ['?'])[0]}")
    return " ".join(done.stdout.split())


def _reported_version(binary: Path) -> str:
    """What ``daprd --version`` prints (``""`` if it cannot be run)."""
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


if __name__ == "__main__":
    sys.exit(main())
