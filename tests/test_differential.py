"""The request matrix for the differential proof: the same app-level requests against Dapr's built-in store
and against secretbridge, reading the same Key Vault double or the same file.

The matrix is data (`KEYVAULT_CASES`, `FILE_CASES`): each case is one request an app makes through daprd
(`GET /v1.0/secrets/<store>/<name>` or `/bulk`, with `metadata.*` query parameters), the answer
secretbridge gives, and the ids of the differences in docs/migration.md that allow the built-in store's
answer to differ. Today it runs against secretbridge over its socket, as daprd talks to it (so every
expectation here is checked); the daprd half, the built-in `azure.keyvault` and `local.file` in one lean
daprd beside secretbridge, joins when that daprd can be built here (see `test_under_daprd`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from secretbridge.tools.migrate import BUILTIN_STORES, COMMON_DIFFERENCES

from tests.fakes import FakeKeyVault, vault_metadata
from tests.support import Bridge

pytest_plugins = ("tests.fakes.fixtures",)


@dataclass(frozen=True)
class Case:
    """One app-level request and secretbridge's answer to it."""

    id: str
    #: "get" (GET /v1.0/secrets/<store>/<name>) or "bulk" (GET /v1.0/secrets/<store>/bulk).
    call: str
    name: str = ""
    #: Request metadata, as `?metadata.<key>=<value>` on the daprd URL.
    metadata: dict[str, str] = field(default_factory=dict)
    #: The gRPC status secretbridge answers (daprd turns any non-OK into HTTP 500 ERR_SECRET_GET).
    status: str = "OK"
    #: The body on OK. "{version:first}" in request metadata is db-password's first version id.
    body: dict[str, object] | None = None
    #: Differences (docs/migration.md ids) that allow the built-in store's answer to differ here.
    differs: tuple[str, ...] = ()


#: What the vault double holds for the Key Vault cases (name -> list of versions, oldest first).
VAULT_CONTENT: dict[str, list[dict[str, object]]] = {
    "db-password": [{"value": "first"}, {"value": "second"}],
    "api-key": [{"value": "k"}],
    "off": [{"value": "x", "enabled": False}],
    "old": [{"value": "expired-value", "exp": -3600}],
    "early": [{"value": "not-yet", "nbf": 3600}],
    "a-b-c": [{"value": "dashes"}],
}

KEYVAULT_CASES: tuple[Case, ...] = (
    Case("latest", "get", "db-password", body={"db-password": "second"}),
    Case("by-version", "get", "db-password", {"version_id": "{version:first}"}, body={"db-password": "first"}),
    Case("missing", "get", "nope", status="NOT_FOUND", differs=("error-text",)),
    Case("disabled", "get", "off", status="FAILED_PRECONDITION", differs=("error-text",)),
    Case("expired", "get", "old", body={"old": "expired-value"}),
    Case("not-yet-valid", "get", "early", body={"early": "not-yet"}),
    Case("dashes", "get", "a-b-c", body={"a-b-c": "dashes"}),
    Case("underscores", "get", "a_b_c", status="INVALID_ARGUMENT", differs=("kv-names", "error-text")),
    Case("bulk", "bulk", body={
        "a-b-c": {"a-b-c": "dashes"}, "api-key": {"api-key": "k"}, "db-password": {"db-password": "second"},
        "early": {"early": "not-yet"}, "old": {"old": "expired-value"},
    }),
    Case("bulk-maxresults", "bulk", metadata={"maxresults": "2"},
         body={"a-b-c": {"a-b-c": "dashes"}, "api-key": {"api-key": "k"}}, differs=("kv-maxresults",)),
    Case("bulk-maxresults-zero", "bulk", metadata={"maxresults": "0"}, body={
        "a-b-c": {"a-b-c": "dashes"}, "api-key": {"api-key": "k"}, "db-password": {"db-password": "second"},
        "early": {"early": "not-yet"}, "old": {"old": "expired-value"},
    }),
)

#: The secrets file for the file cases, plain (`nestedSeparator` ":") and multi-valued.
FILE_CONTENT: dict[str, object] = {
    "plain": "v",
    "with-dash": "d",
    "with_underscore": "u",
    "db": {"user": "app", "password": "pw", "port": 5432},
    "list": ["a", "b"],
}

FILE_CASES: tuple[Case, ...] = (
    Case("flat", "get", "plain", body={"plain": "v"}),
    Case("dashes", "get", "with-dash", body={"with-dash": "d"}),
    Case("underscores", "get", "with_underscore", body={"with_underscore": "u"}),
    Case("nested", "get", "db:user", body={"db:user": "app"}),
    Case("number", "get", "db:port", body={"db:port": "5432"}, differs=("file-scalars",)),
    Case("array", "get", "list:1", body={"list:1": "b"}),
    Case("missing", "get", "nope", status="NOT_FOUND", differs=("error-text",)),
    Case("bulk", "bulk", body={
        "plain": {"plain": "v"}, "with-dash": {"with-dash": "d"}, "with_underscore": {"with_underscore": "u"},
        "db:user": {"db:user": "app"}, "db:password": {"db:password": "pw"}, "db:port": {"db:port": "5432"},
        "list:0": {"list:0": "a"}, "list:1": {"list:1": "b"},
    }, differs=("file-scalars",)),
    Case("bulk-maxresults", "bulk", metadata={"maxresults": "2"},
         body={"plain": {"plain": "v"}, "with-dash": {"with-dash": "d"}}, differs=("file-maxresults",)),
)

MULTI_VALUED_CASES: tuple[Case, ...] = (
    Case("multi-valued", "get", "db", body={"user": "app", "password": "pw", "port": "5432"},
         differs=("file-scalars",)),
    Case("multi-valued-string", "get", "plain", body={"plain": "v"}),
    Case("multi-valued-array", "get", "list", body={"0": "a", "1": "b"}, differs=("file-multivalued",)),
)


def _known_ids() -> set[str]:
    return {d.id for s in BUILTIN_STORES for d in s.differences} | {d.id for d in COMMON_DIFFERENCES}


def test_every_allowed_difference_is_one_docs_migration_lists() -> None:
    known = _known_ids()
    for case in (*KEYVAULT_CASES, *FILE_CASES, *MULTI_VALUED_CASES):
        assert set(case.differs) <= known, (case.id, set(case.differs) - known)


def _run(bridge: Bridge, case: Case, instance: str, fill: Callable[[str], str] = lambda s: s) -> None:
    metadata = {k: fill(v) for k, v in case.metadata.items()}
    try:
        answer: object = (
            bridge.get(case.name, metadata, instance=instance) if case.call == "get"
            else bridge.bulk_get(metadata, instance=instance)
        )
    except grpc.RpcError as err:
        assert err.code().name == case.status, (case.id, err.code(), err.details())
        return
    assert case.status == "OK", (case.id, answer)
    assert answer == case.body, case.id


def test_the_key_vault_matrix_against_secretbridge(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    versions: dict[str, str] = {}
    now = time.time()
    for name, history in VAULT_CONTENT.items():
        for index, version in enumerate(history):
            made = fake_vault.set_secret(
                name, str(version["value"]), enabled=bool(version.get("enabled", True)),
                exp=now + float(version["exp"]) if "exp" in version else None,  # type: ignore[arg-type]
                nbf=now + float(version["nbf"]) if "nbf" in version else None,  # type: ignore[arg-type]
            )
            if index == 0:
                versions[name] = made
    bridge.init({"backend": "keyvault", **vault_metadata(fake_vault)}, instance="kv")
    first = versions["db-password"]
    for case in KEYVAULT_CASES:
        _run(bridge, case, "kv", lambda text: text.replace("{version:first}", first))


def test_the_file_matrix_against_secretbridge(bridge: Bridge, tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps(FILE_CONTENT))
    bridge.init({"backend": "file", "secretsFile": str(path)}, instance="file")
    bridge.init({"backend": "file", "secretsFile": str(path), "multiValued": "true"}, instance="multi")
    for case in FILE_CASES:
        _run(bridge, case, "file")
    for case in MULTI_VALUED_CASES:
        _run(bridge, case, "multi")


def test_under_daprd() -> None:
    """The same matrix through one daprd, against the built-in stores and secretbridge side by side."""
    pytest.skip(
        "needs the lean daprd with the built-in azure.keyvault and local.file (tools/daprd/get_daprd.py), "
        "not available in this tree yet; the matrix above is the data that suite will replay"
    )
