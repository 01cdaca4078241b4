"""tools/daprd/get_daprd.py: where daprd comes from, without building it (that takes minutes: `make daprd`)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import stat
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "daprd" / "get_daprd.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("get_daprd", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["get_daprd"] = module
    spec.loader.exec_module(module)
    return module


get_daprd = _load()
needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="the cache path includes the Go version")


def _fake_daprd(path: Path, version: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home and cache, no DAPRD."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DAPRD", raising=False)
    return tmp_path / "home"


def test_the_pinned_version_is_the_dapr_requirement_in_go_mod() -> None:
    go_mod = (SCRIPT.parent / "go.mod").read_text()
    required = re.findall(r"^\s*(?:require\s+)?github\.com/dapr/dapr\s+v(\S+)", go_mod, re.MULTILINE)
    assert required == [get_daprd.pinned_version()]


def test_daprd_from_the_environment_is_used_as_an_absolute_path(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_daprd(tmp_path / "bin" / "daprd", "0.0.0")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAPRD", "bin/daprd")
    assert get_daprd.find_daprd(build=False) == tmp_path / "bin" / "daprd"


def test_daprd_from_the_environment_must_be_executable(home: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "daprd"
    plain.write_text("not a program")
    monkeypatch.setenv("DAPRD", str(plain))
    with pytest.raises(get_daprd.DaprdError, match=r"DAPRD=.* is not an executable file"):
        get_daprd.find_daprd(build=False)


def test_the_cli_install_is_used_when_it_reports_the_pinned_version(home: Path) -> None:
    installed = _fake_daprd(home / ".dapr" / "bin" / "daprd", get_daprd.pinned_version())
    assert get_daprd.find_daprd(build=False) == installed


def test_a_cli_install_of_another_version_is_passed_over(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _fake_daprd(home / ".dapr" / "bin" / "daprd", "1.0.0")
    monkeypatch.setenv("PATH", str(home))  # and no Go toolchain
    with pytest.raises(get_daprd.DaprdError, match=r"the Go toolchain is not installed"):
        get_daprd.find_daprd()
    assert "reports version 1.0.0" in capsys.readouterr().err


@needs_go
def test_without_build_a_missing_binary_is_an_error_naming_make_daprd(home: Path) -> None:
    with pytest.raises(get_daprd.DaprdError, match=r"not built yet .*make daprd"):
        get_daprd.find_daprd(build=False)


@needs_go
def test_the_cache_is_shared_per_user_and_keyed_by_version_and_inputs(home: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = get_daprd.cached_path()
    version = get_daprd.pinned_version()
    assert path.name == "daprd"
    assert re.fullmatch(rf"daprd-{re.escape(version)}-[0-9a-f]{{12}}", path.parent.name)
    assert path.parent.parent == tmp_path / "cache" / "secretbridge"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert get_daprd.cache_root() == home / ".cache" / "secretbridge"


def test_the_hash_covers_the_version_and_the_go_toolchain() -> None:
    base = get_daprd.inputs_hash("1.2.3", "go1.26.8 linux amd64")
    assert get_daprd.inputs_hash("1.2.3", "go1.26.8 linux amd64") == base
    assert get_daprd.inputs_hash("1.2.4", "go1.26.8 linux amd64") != base
    assert get_daprd.inputs_hash("1.2.3", "go1.26.9 linux amd64") != base


def test_a_refused_module_is_explained_in_one_line() -> None:
    lines = [
        "go: downloading github.com/dapr/durabletask-go v0.12.4",
        "../dapr/pkg/runtime/wfengine/todo/todo.go:20:2: github.com/dapr/durabletask-go@v0.12.4: reading "
        "https://proxy.golang.org/github.com/dapr/durabletask-go/@v/v0.12.4.zip: 403 Forbidden",
        "\tserver response: This module version is not available.",
    ]
    message = get_daprd._explain(lines)
    assert "\n" not in message
    assert "refused github.com/dapr/durabletask-go@v0.12.4: 403 Forbidden: This module version is not available." in (
        message
    )


def test_the_command_prints_the_path_last_on_stdout(home: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    installed = _fake_daprd(home / ".dapr" / "bin" / "daprd", get_daprd.pinned_version())
    assert get_daprd.main([]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(installed)
    monkeypatch.setenv("DAPRD", os.devnull)
    assert get_daprd.main([]) == 1
    assert capsys.readouterr().err.startswith("get_daprd: DAPRD=")


def test_the_matrix_is_the_pin_then_each_kept_release_newest_first(capsys: pytest.CaptureFixture[str]) -> None:
    found = get_daprd.releases()
    assert found[0].pinned and found[0].version == get_daprd.pinned_version()
    assert len(found) >= 2, "the previous pin is kept buildable for `make compat`"
    kept = [r.version for r in found[1:]]
    assert kept == sorted(kept, key=get_daprd._version_key, reverse=True)
    for release in found[1:]:
        assert release.go_mod.parent.name == release.version and release.go_sum.is_file()
    assert get_daprd.main(["--releases"]) == 0
    assert capsys.readouterr().out.split() == [r.version for r in found]


def test_an_unknown_release_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(get_daprd.DaprdError, match=r"daprd 9\.9\.9 is not a release .*known: "
                                                     + re.escape(get_daprd.pinned_version())):
        get_daprd.find_daprd(build=False, version="9.9.9")


@needs_go
def test_a_release_asked_for_by_version_is_that_release_whatever_daprd_says(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    older = get_daprd.releases()[-1]
    monkeypatch.setenv("DAPRD", str(_fake_daprd(tmp_path / "bin" / "daprd", "0.0.0")))
    with pytest.raises(get_daprd.DaprdError, match=rf"daprd {re.escape(older.version)} is not built yet .*--release"):
        get_daprd.find_daprd(build=False, version=older.version)
    installed = _fake_daprd(home / ".dapr" / "bin" / "daprd", older.version)
    assert get_daprd.find_daprd(build=False, version=older.version) == installed
    assert get_daprd.cached_path(version=older.version).parent.name.startswith(f"daprd-{older.version}-")


def test_the_deployments_daprd_image_is_the_pinned_release() -> None:
    """The Container Apps YAML and Bicep run daprd themselves: the image they name is the release the tests run,
    so moving the pin without moving them fails here instead of shipping an untested pairing."""
    deploy = SCRIPT.parents[2] / "deploy" / "containerapps"
    pin = get_daprd.pinned_version()
    for path in (deploy / "app.yaml", deploy / "main.bicep"):
        tags = re.findall(r"daprio/daprd:([0-9][0-9A-Za-z.\-]*)", path.read_text(encoding="utf-8"))
        assert tags, f"{path.name} names no daprd image"
        assert set(tags) == {pin}, f"{path.name} names daprd {sorted(set(tags))}, the pin is {pin}"
