"""Dapr's own secret-store conformance suite against `secretbridge serve`, once per backend.

tools/conformance is a Go module at the dapr and components-contrib versions of the pinned daprd. Its one
test hands components-contrib's `ConformanceTests` (tests/conformance/secretstores) the store daprd itself
makes of a pluggable socket (dapr's `pkg/components/secretstores.NewGRPCSecretStore`), pointed at a real
`secretbridge serve`. The suite initialises the store, pings it, Gets `conftestsecret` and BulkGets, expecting
`{"conftestsecret": "abcd"}` and `{"secondsecret": "efgh"}` among the results. Every backend can hold those
names (lower-case letters: valid Key Vault, Container Apps, environment and JSON names), so each backend runs
the whole suite; none is skipped.

The Go test binary is compiled once per session (`go test -c`, sharing Go's module and build caches with the
daprd build). Without Go, or when the module proxy cannot be reached, these tests skip saying why; under
`CI=true` they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes import FakeKeyVault, FakeManagedIdentity, vault_metadata
from tests.stack import REPO, SOCKET_NAME, child_env, start_serve, temp_folder
from tests.test_containerapps import AtomicVolume

pytest_plugins = ("tests.fakes.fixtures",)

MODULE = REPO / "tools" / "conformance"
#: What ConformanceTests reads (components-contrib tests/conformance/secretstores/secretstores.go).
DATA = {"conftestsecret": "abcd", "secondsecret": "efgh"}
#: The suite's subtests; every one must have run and passed.
SUBTESTS = {"init", "ping", "get", "get/get", "bulkGet", "bulkGet/bulkget"}
_REQUIRE = re.compile(r"^\s*(?:require\s+)?(\S+)\s+(v\S+)", re.MULTILINE)


def _requirements(go_mod: Path) -> dict[str, str]:
    text = re.sub(r"//.*", "", go_mod.read_text())
    return {module: version for module, version in _REQUIRE.findall(text) if "." in module.split("/")[0]}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the conformance suite cannot run: {reason}", pytrace=False)
    pytest.skip(f"the conformance suite cannot run: {reason}")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled Go test binary of tools/conformance."""
    go = shutil.which("go")
    if go is None:
        _unavailable("the Go toolchain is not installed ('go' is not on PATH)")
    binary = tmp_path_factory.mktemp("conformance") / "conformance.test"
    env = dict(os.environ, CGO_ENABLED="0", GOWORK="off", GOFLAGS="")
    # The daprd build's flags, so Go's build cache serves the packages both compile.
    done = subprocess.run([str(go), "test", "-c", "-trimpath", "-o", str(binary), "."], cwd=MODULE, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        _unavailable(f"`go test -c` in tools/conformance failed: {done.stderr.strip()[-2000:]}")
    return binary


def _run(suite: Path, folder: Path, backend: str, metadata: dict[str, str]) -> dict[str, str]:
    """Run the suite against serve's socket in `folder`; each subtest's result (PASS, FAIL, SKIP)."""
    env = dict(os.environ, SECRETBRIDGE_CONFORMANCE_SOCKET=str(folder / f"{SOCKET_NAME}.sock"),
               SECRETBRIDGE_CONFORMANCE_INSTANCE=f"conformance-{backend}",
               SECRETBRIDGE_CONFORMANCE_METADATA=json.dumps({"backend": backend, **metadata}))
    done = subprocess.run([str(suite), "-test.v", "-test.count=1", "-test.run", "^TestSecretStoreConformance$"],
                          cwd=MODULE, env=env, capture_output=True, text=True, timeout=300, check=False)
    results = dict(
        (name, result)
        for result, name in re.findall(r"--- (PASS|FAIL|SKIP): TestSecretStoreConformance/(\S+)", done.stdout)
    )
    assert done.returncode == 0 and set(results) == SUBTESTS and set(results.values()) == {"PASS"}, (
        f"the conformance suite failed on {backend}:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}\n"
        f"serve's log:\n{(folder / 'serve.log').read_text()[-2000:]}"
    )
    return results


Prepare = Callable[[Path], dict[str, str]]


def _file(folder: Path) -> dict[str, str]:
    (folder / "secrets.json").write_text(json.dumps(DATA))
    return {"secretsFile": str(folder / "secrets.json")}


def _containerapps(folder: Path) -> dict[str, str]:
    AtomicVolume(folder / "volume").write(DATA)
    return {"secretsPath": str(folder / "volume")}


@pytest.fixture
def serving(suite: Path) -> Iterator[Callable[[str, Prepare, dict[str, str] | None], dict[str, str]]]:
    """Start serve with one backend's data in place, run the suite against it, stop serve."""

    def run(backend: str, prepare: Prepare, env: dict[str, str] | None = None) -> dict[str, str]:
        with temp_folder("sbconf-") as folder:
            metadata = prepare(folder)
            serve = start_serve(folder, env or child_env())
            try:
                return _run(suite, folder, backend, metadata)
            finally:
                serve.stop()

    yield run


def test_the_suite_module_uses_the_pinned_daprd_s_versions() -> None:
    ours = _requirements(MODULE / "go.mod")
    daprd = _requirements(REPO / "tools" / "daprd" / "go.mod")
    assert {"github.com/dapr/dapr", "github.com/dapr/components-contrib"} <= set(ours)
    differing = {module: (version, daprd[module]) for module, version in ours.items()
                 if module in daprd and daprd[module] != version}
    assert not differing, f"tools/conformance/go.mod differs from the pinned daprd's (ours, daprd's): {differing}"


@pytest.mark.parametrize("backend,prepare", [("file", _file), ("containerapps", _containerapps)])
def test_conformance_on_local_backends(serving: Callable[..., dict[str, str]], backend: str,
                                       prepare: Prepare) -> None:
    serving(backend, prepare)


def test_conformance_on_env(serving: Callable[..., dict[str, str]]) -> None:
    # The suite's t.Setenv reaches only the Go process; secretbridge reads its own environment.
    serving("env", lambda folder: {}, child_env(**DATA))


def test_conformance_on_keyvault(serving: Callable[..., dict[str, str]], fake_vault: FakeKeyVault,
                                 fake_identity: FakeManagedIdentity) -> None:
    for name, value in DATA.items():
        fake_vault.set_secret(name, value)
    # The fixtures put the identity endpoint and SSL_CERT_FILE (the test CA) in os.environ.
    serving("keyvault", lambda folder: vault_metadata(fake_vault), child_env())
