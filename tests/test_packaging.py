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


def test_the_image_installs_only_what_the_locks_hold() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    steps = re.sub(r"\\\n", " ", dockerfile)
    installs = [line for line in steps.splitlines() if "pip install" in line]
    assert installs, "the Dockerfile installs nothing?"
    for command in (part for line in installs for part in line.split("&&") if "pip install" in part):
        locked = "--require-hashes" in command and re.search(r"-r deploy/(build-)?requirements\.lock", command)
        package_alone = "--no-deps" in command and "--no-build-isolation" in command and command.rstrip().endswith(" .")
        assert locked or package_alone, f"an install outside the locks: {command.strip()}"
    assert "-r deploy/requirements.lock" in steps and "-r deploy/build-requirements.lock" in steps
    # An exact Python patch release and Debian release, never a moving tag such as 3.11-slim.
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$", dockerfile, re.M)
    assert all(line.strip() == "FROM ${PYTHON_IMAGE}" or line.strip() == "FROM ${PYTHON_IMAGE} AS build"
               for line in dockerfile.splitlines() if line.startswith("FROM"))


def test_the_licence_is_the_one_pyproject_declares() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
