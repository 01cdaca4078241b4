"""Apps in other languages, unchanged, through the real daprd: one expectation table for the Python
app (examples/read_secrets.py: the `dapr` SDK over gRPC, plain HTTP), the Go app (Dapr's Go SDK,
`GetSecret`/`GetBulkSecret`) and the JavaScript app (`@dapr/dapr`, `client.secret.get`/`getBulk`
over gRPC and over HTTP); see tests/apps.

Each case is read by every app through one daprd in front of `secretbridge serve` (file,
multi-valued file and Key Vault against the test double). Where an SDK cannot say what the others
say, the table says so in SDK_LIMITS, as a user of that SDK would meet it; everything else is the
same expectation for every app.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.apps import AppUnavailable, app_command
from tests.fakes import IDENTITY_ENV_VARS, FakeKeyVault, FakeManagedIdentity, vault_metadata
from tests.fakes.tls import TestCertificates
from tests.stack import REPO, Stack, child_env, run_stack, temp_folder, write_resources
from tests.test_e2e_runtimes import SCOPES, component  # the same scopes as the Python app's cases

pytest_plugins = ("tests.fakes.fixtures",)

SECRETS = {"db-password": "sdk-VALUE-1", "internal": "sdk-VALUE-2", "nested": {"inner": "sdk-VALUE-3"}}
MULTI = {"conn": {"host": "db.local", "port": 5432}, "empty": {}}


# -- what every app should see ------------------------------------------------------------------


@dataclass(frozen=True)
class Ok:
    """A secret's data (for bulk: {name: {key: value}})."""

    data: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    """An error as daprd shapes it: the gRPC code, the HTTP status and errorCode, and words of the
    message (which carries secretbridge's own status as text, e.g. `code = NotFound`)."""

    grpc: str
    status: int
    error_code: str
    says: tuple[str, ...] = ()


def not_found(name: str) -> Failed:
    return Failed("INTERNAL", 500, "ERR_SECRET_GET", ("code = NotFound", f"secret '{name}'", "not found"))


@dataclass(frozen=True)
class Case:
    """One app invocation: `keys` read one by one, then the bulk read, all with `metadata`."""

    store: str
    get: dict[str, Ok | Failed]
    bulk: Ok | Failed
    metadata: dict[str, str] = field(default_factory=dict)


LOCAL_BULK = {"db-password": {"db-password": "sdk-VALUE-1"}, "nested:inner": {"nested:inner": "sdk-VALUE-3"}}
VAULT_BULK = {"db-password": {"db-password": "kv-VALUE-1"}, "rotated": {"rotated": "kv-VALUE-3"}}
MAXRESULTS_MANY = Failed("INTERNAL", 500, "ERR_SECRET_GET", ("InvalidArgument", "maxresults"))

CASES: dict[str, Case] = {
    "single-valued file": Case("local", {
        "db-password": Ok({"db-password": "sdk-VALUE-1"}),
        "nested:inner": Ok({"nested:inner": "sdk-VALUE-3"}),
        "nope": not_found("nope"),
        # daprd's scopes refuse it before the store is asked.
        "internal": Failed("PERMISSION_DENIED", 403, "ERR_PERMISSION_DENIED",
                           ('access denied by policy to get "internal" from "local"',)),
    }, Ok(LOCAL_BULK)),
    "multi-valued file": Case("multi", {
        "conn": Ok({"host": "db.local", "port": "5432"}),
        "empty": Ok({}),
    }, Ok({"conn": {"host": "db.local", "port": "5432"}, "empty": {}})),
    "key vault version_id": Case("vault", {
        "rotated": Ok({"rotated": "kv-VALUE-2"}),
        # Another secret has no version of that id.
        "db-password": Failed("INTERNAL", 500, "ERR_SECRET_GET", ("code = NotFound", "version")),
    }, Ok(VAULT_BULK), metadata={"version_id": "FIRST"}),
    "key vault errors": Case("vault", {
        "missing": not_found("missing"),
        "retired": Failed("INTERNAL", 500, "ERR_SECRET_GET", ("code = FailedPrecondition", "disabled")),
    }, Ok(VAULT_BULK)),
    "maxresults": Case("local", {"db-password": Ok({"db-password": "sdk-VALUE-1"})},
                       Ok({"db-password": {"db-password": "sdk-VALUE-1"}}), metadata={"maxresults": "1"}),
    "maxresults invalid": Case("local", {"db-password": Ok({"db-password": "sdk-VALUE-1"})},
                               MAXRESULTS_MANY, metadata={"maxresults": "many"}),
    "unknown store": Case("nosuch", {
        "db-password": Failed("INVALID_ARGUMENT", 401, "ERR_SECRET_STORE_NOT_FOUND",
                              ("failed finding secret store with key nosuch",)),
    }, Failed("INVALID_ARGUMENT", 401, "ERR_SECRET_STORE_NOT_FOUND", ())),
}


@dataclass(frozen=True)
class Limits:
    """What an SDK's API cannot carry (JavaScript SDK 3.18.0: `secret.get` over gRPC takes a
    metadata argument and does not send it, and keeps only the first key of a multi-valued secret;
    `getBulk` takes no metadata at all)."""

    get_metadata: bool = True
    bulk_metadata: bool = True
    all_keys: bool = True


#: (app, transport) → what its SDK cannot carry; absent means nothing.
SDK_LIMITS: dict[tuple[str, str], Limits] = {
    ("js", "grpc"): Limits(get_metadata=False, bulk_metadata=False, all_keys=False),
    ("js", "http"): Limits(bulk_metadata=False),
}
#: Each app and the transports it reads over.
APPS: dict[str, tuple[str, ...]] = {"python": ("grpc", "http"), "go": ("grpc",), "js": ("grpc", "http")}


def expected(case: Case, app: str, transport: str, without_metadata: Case) -> Case:
    """`case` as this SDK can ask it: metadata it cannot send gives the answers of a read without it."""
    limits = SDK_LIMITS.get((app, transport), Limits())
    get = case.get if limits.get_metadata else without_metadata.get
    bulk = case.bulk if limits.bulk_metadata else without_metadata.bulk
    return Case(case.store, get, bulk, case.metadata)


# -- reading an app's answers -------------------------------------------------------------------


def grpc_code(name: str) -> str:
    """gRPC's code name in the spec's spelling: Go prints `PermissionDenied`, the others `PERMISSION_DENIED`."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).upper()


def check(answer: dict[str, Any], want: Ok | Failed, transport: str, *, all_keys: bool = True) -> None:
    """One answer as this transport surfaces it, against the shared expectation."""
    if isinstance(want, Ok):
        if transport == "http" and "status" in answer:  # the Python app's plain HTTP
            assert answer["status"] in (200, 204), answer
            # 204 for a secret with no keys: no body (urllib: None; the JavaScript SDK answers "").
            data = answer["body"] or {}
        else:
            assert set(answer) == {"data"}, answer
            data = answer["data"] or {}
        if all_keys:
            assert data == want.data
        else:  # one key of the secret's several
            assert len(data) == min(1, len(want.data)) and data.items() <= want.data.items(), data
        return
    if transport == "grpc":
        assert grpc_code(answer["code"]) == want.grpc, answer
        message = answer["details"]
    else:
        assert answer["status"] == want.status, answer
        assert answer["body"]["errorCode"] == want.error_code, answer
        message = answer["body"]["message"]
    for words in want.says:
        assert words in message


# -- the stack ------------------------------------------------------------------------------------


@dataclass
class Apps:
    """daprd in front of serve, and the Key Vault version the cases ask for."""

    stack: Stack
    first_version: str


@pytest.fixture(scope="module")
def apps_stack(kv_certs: TestCertificates) -> Iterator[Apps]:
    """One daprd (real, from get_daprd.py) in front of `secretbridge serve` for every app and case."""
    with FakeManagedIdentity() as identity, FakeKeyVault(kv_certs, identity=identity) as vault, \
            temp_folder("sbsdk-") as folder:
        vault.set_secret("db-password", "kv-VALUE-1")
        first = vault.set_secret("rotated", "kv-VALUE-2")
        vault.set_secret("rotated", "kv-VALUE-3")
        vault.set_secret("retired", "kv-VALUE-4", enabled=False)
        (folder / "secrets.json").write_text(json.dumps(SECRETS))
        (folder / "multi.json").write_text(json.dumps(MULTI))
        resources, config = write_resources(folder, "---\n".join([
            component("local", {"backend": "file", "secretsFile": str(folder / "secrets.json")}),
            component("multi", {"backend": "file", "secretsFile": str(folder / "multi.json"), "multiValued": "true"}),
            component("vault", {"backend": "keyvault", **vault_metadata(vault)}),
        ]), SCOPES)
        env = {k: v for k, v in child_env().items() if k not in IDENTITY_ENV_VARS}
        env |= identity.env() | {"SSL_CERT_FILE": str(kv_certs.ca_path)}
        with run_stack(folder, resources, config, env, runtime="daprd") as stack:
            yield Apps(stack, first)


def command(app: str) -> list[str]:
    """The app's command line; skips (fails under CI) with how to get what is missing."""
    if app == "python":
        return [sys.executable, str(REPO / "examples" / "read_secrets.py"), "--json"]
    try:
        return app_command(app)
    except AppUnavailable as err:
        message = f"the {app} SDK app is not available: {err} (`python -m tests.apps` makes it ready)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def run(apps: Apps, app: str, case: Case) -> dict[str, Any]:
    argv = [*command(app), case.store, *case.get]
    for name, value in case.metadata.items():
        argv += ["--metadata", f"{name}={value.replace('FIRST', apps.first_version)}"]
    done = subprocess.run(argv, env=apps.stack.app_env(), cwd=REPO, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("case_name", list(CASES))
@pytest.mark.parametrize("app", list(APPS))
def test_every_sdk_app_reads_through_daprd_alike(apps_stack: Apps, app: str, case_name: str) -> None:
    case = CASES[case_name]
    out = run(apps_stack, app, case)
    assert set(out) == set(APPS[app])
    without = WITHOUT_METADATA.get(case_name, case)
    for transport in APPS[app]:
        want = expected(case, app, transport, without)
        limits = SDK_LIMITS.get((app, transport), Limits())
        reads = out[transport]
        assert set(reads["get"]) == set(want.get)
        for key, answer in reads["get"].items():
            check(answer, want.get[key], transport, all_keys=limits.all_keys)
        check(reads["bulk"], want.bulk, transport)


#: The answers of a case's reads when its metadata does not reach the store (see SDK_LIMITS).
WITHOUT_METADATA: dict[str, Case] = {
    "key vault version_id": Case("vault", {"rotated": Ok({"rotated": "kv-VALUE-3"}),
                                           "db-password": Ok({"db-password": "kv-VALUE-1"})}, Ok(VAULT_BULK)),
    "maxresults": Case("local", {"db-password": Ok({"db-password": "sdk-VALUE-1"})}, Ok(LOCAL_BULK)),
    "maxresults invalid": Case("local", {"db-password": Ok({"db-password": "sdk-VALUE-1"})}, Ok(LOCAL_BULK)),
}
