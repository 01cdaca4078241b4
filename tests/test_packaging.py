"""What a platform team adopts besides the code: one version, a licence, the image's locked dependencies."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_comes_from_pyproject() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "secretbridge", "--version"], check=True, capture_output=True, text=True, cwd=ROOT
    )
    assert run.stdout.strip() == f"secretbridge {PYPROJECT['project']['version']}"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """A pip-compile lock as {normalised name: (version, hashes)}; every entry is `name==version` with hashes."""
    entries: dict[str, tuple[str, list[str]]] = {}
    logical = re.sub(r"\\\n", " ", path.read_text())
    for line in logical.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"{path.name}: options do not belong in the lock: {line}"
        pin = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert pin, f"{path.name}: not an exact pin with sha256 hashes: {line[:120]}"
        entries[_normalise(pin[1])] = (pin[2], re.findall(r"sha256:([0-9a-f]{64})", pin[3]))
    return entries


def _check_covers(lock: Path, requirements: list[str]) -> None:
    locked = _locked(lock)
    for spec in requirements:
        requirement = Requirement(spec)
        name = _normalise(requirement.name)
        assert name in locked, f"{lock.name} lacks {requirement.name}: run make lock"
        version, hashes = locked[name]
        assert hashes
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {requirement.name}=={version}, outside pyproject.toml's {requirement.specifier}: "
            "run make lock"
        )


def test_the_image_lock_pins_every_runtime_dependency_with_hashes() -> None:
    _check_covers(ROOT / "deploy" / "requirements.lock", PYPROJECT["project"]["dependencies"])


def test_the_build_lock_pins_the_build_backend_with_hashes() -> None:
    _check_covers(ROOT / "deploy" / "build-requirements.lock", PYPROJECT["build-system"]["requires"])


def _pip_commands(dockerfile: str) -> list[str]:
    """Every pip command the Dockerfile runs (continuation lines joined, one entry per `&&` part)."""
    code = "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    steps = re.sub(r"\\\n", " ", code)
    parts = [part.strip() for line in steps.splitlines() for part in line.split("&&")]
    return [part for part in parts if re.search(r"(^|[\s/])pip\s", part)]


def _allowed(command: str) -> bool:
    """A pip command the image may run: a locked, hash-checked, wheels-only install, or the project's own wheel
    (built from the copied sources with the locked backend, installed without an index)."""
    locked = ("--require-hashes" in command and "--only-binary=:all:" in command
              and re.search(r"-r deploy/(build-)?requirements\.lock$", command))
    own_wheel = "--no-deps" in command and "--no-index" in command and (
        (" wheel " in command and "--no-build-isolation" in command and command.endswith(" ."))
        or (" install " in command and command.endswith("/wheels/secretbridge-*.whl"))
    )
    return bool(locked or own_wheel)


def test_the_image_installs_only_what_the_locks_hold() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    commands = _pip_commands(dockerfile)
    assert len(commands) >= 4, "the Dockerfile installs nothing?"
    for command in commands:
        assert _allowed(command), f"an install outside the locks: {command}"
        assert "--no-cache-dir" in command or "PIP_NO_CACHE_DIR=1" in dockerfile
    assert any(c.endswith("-r deploy/requirements.lock") for c in commands)
    assert any(c.endswith("-r deploy/build-requirements.lock") for c in commands)
    # An exact Python patch release and Debian release, never a moving tag such as 3.11-slim.
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$", dockerfile, re.M)
    assert all(line.strip() == "FROM ${PYTHON_IMAGE}" or line.strip() == "FROM ${PYTHON_IMAGE} AS build"
               for line in dockerfile.splitlines() if line.startswith("FROM"))


def test_the_install_check_refuses_an_unlocked_install() -> None:
    assert _pip_commands("RUN pip install requests && echo done") == ["RUN pip install requests"]
    assert _pip_commands("RUN echo pipeline && ls") == []
    lock = "--require-hashes --only-binary=:all: -r deploy/requirements.lock"
    assert _allowed(f"/opt/build/bin/pip --python /x install {lock}")
    for refused in ("pip install requests", f"pip install {lock} requests", "pip install --require-hashes -r x.txt",
                    lock.replace("--only-binary=:all: ", "pip install "), "pip install --no-deps --no-index ."):
        assert not _allowed(refused), refused


def test_the_licence_is_the_one_pyproject_declares() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
