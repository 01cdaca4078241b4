"""The request matrix for the differential proof: the same app-level requests against Dapr's built-in store
and against secretbridge, reading the same Key Vault double or the same file.

The matrix is data (`KEYVAULT_CASES`, `FILE_CASES`, `MULTI_VALUED_CASES`): each case is one request an app
makes through daprd (`GET /v1.0/secrets/<store>/<name>` or `/bulk`, with `metadata.*` query parameters), the
answer secretbridge gives, and the ids of the differences in docs/migration.md that allow the built-in store's
answer to differ. It runs twice: against secretbridge over its socket, as daprd talks to it; and through one
real (lean) daprd that holds the built-in `azure.keyvault` and `local.file` beside secretbridge, where every
request goes to both and the answers must match, status and body, except as a listed difference says.

The built-in Key Vault store only talks to `https://<vaultName>.vault.azure.net:443`, so daprd alone runs in
its own mount namespace whose `/etc/hosts` names the double's loopback address (root and `unshare`), with a
certificate for that name from the test CA (`SSL_CERT_FILE`) and its managed identity from
`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, as secretbridge's.
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

from tests.fakes import FakeKeyVault, TestCertificates, vault_metadata
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
    versions = _fill_vault(fake_vault)
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


# -- the same matrix through one real daprd, the built-in stores beside secretbridge --------------------

#: The name the built-in store reads: it only ever talks to https://<vaultName>.vault.azure.net:443.
VAULT_NAME = "sbdiffvault"
VAULT_HOST = f"{VAULT_NAME}.vault.azure.net"


def _daprd() -> Path:
    """The lean daprd (with the built-in azure.keyvault and local.file), as every daprd test finds it."""
    import os
    import shutil

    from tests.stack import daprd_binary

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("the built-in store needs a private /etc/hosts for daprd alone: root and unshare(1)")
    return daprd_binary()


def _component(folder: Path, name: str, type_: str, metadata: dict[str, str]) -> None:
    items = "".join(f"  - name: {k}\n    value: {json.dumps(v)}\n" for k, v in metadata.items())
    (folder / f"{name}.yaml").write_text(
        f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n"
        f"  type: {type_}\n  version: v1\n  metadata:\n{items}"
    )


def _ask(port: int, store: str, case: Case, fill: Callable[[str], str] = lambda s: s) -> tuple[int, object]:
    from urllib.parse import quote, urlencode

    from tests.stack import http_get

    path = "bulk" if case.call == "bulk" else quote(case.name, safe="")
    query = urlencode({f"metadata.{k}": fill(v) for k, v in case.metadata.items()})
    status, body, _ = http_get(f"http://127.0.0.1:{port}/v1.0/secrets/{store}/{path}" + (f"?{query}" if query else ""))
    return status, (json.loads(body) if body.strip() else None)


def _compare(case: Case, builtin: tuple[int, object], ours: tuple[int, object]) -> None:
    """Same status and body, except where a listed difference says how they may differ."""
    (b_status, b_body), (o_status, o_body) = builtin, ours
    expected_ours = 200 if case.status == "OK" else 500  # daprd answers any store error with ERR_SECRET_GET
    assert o_status == expected_ours, (case.id, o_status, o_body)
    if not case.differs:
        assert (b_status, b_body) == (o_status, o_body), (case.id, builtin, ours)
        return
    if "error-text" in case.differs:  # the same failure, in other words
        assert b_status == o_status == 500, (case.id, builtin, ours)
        assert isinstance(b_body, dict) and isinstance(o_body, dict)
        assert b_body["errorCode"] == o_body["errorCode"] == "ERR_SECRET_GET", (case.id, builtin, ours)
    if {"kv-maxresults", "file-maxresults"} & set(case.differs):  # the built-in gives at least as many
        assert b_status == 200 and isinstance(b_body, dict) and isinstance(o_body, dict)
        assert o_body.items() <= b_body.items() and len(b_body) > len(o_body), (case.id, builtin, ours)
    if "file-scalars" in case.differs:  # Go's %s of a number, where secretbridge gives its JSON text
        assert b_status == o_status == 200, (case.id, builtin, ours)
        assert "%!s(float64=5432)" in json.dumps(b_body) and "%!s" not in json.dumps(o_body), case.id
    if "file-multivalued" in case.differs:  # the built-in drops top-level arrays
        assert b_status == 500 and o_status == 200, (case.id, builtin, ours)


@pytest.mark.timeout(300)
def test_under_daprd(tmp_path: Path, azure_env: pytest.MonkeyPatch) -> None:
    """The matrix through one daprd: each request to the built-in store and to secretbridge, both reading
    the same Key Vault double (the built-in through its real name, from daprd's own /etc/hosts) or file."""
    import os
    import random
    import subprocess

    from azure.keyvault.secrets._shared import http_challenge_cache
    from secretbridge.core.policy import OperatorPolicy

    from tests.fakes import FakeManagedIdentity
    from tests.stack import daprd_command, daprd_env, free_port, http_get, wait_until
    from tests.support import serve_bridge

    daprd = _daprd()
    address = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"
    certs = TestCertificates(tmp_path / "tls", hosts=(VAULT_HOST, address))
    azure_env.setenv("SSL_CERT_FILE", str(certs.ca_path))
    http_challenge_cache.clear()
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps(FILE_CONTENT))
    with FakeManagedIdentity() as identity, \
            FakeKeyVault(certs, identity=identity, host=address, port=443) as vault, \
            serve_bridge(policy=OperatorPolicy(vault_hosts=frozenset({(address, None)}))) as bridge:
        for name, value in identity.env().items():
            azure_env.setenv(name, value)
        versions = _fill_vault(vault)
        resources = tmp_path / "components"
        resources.mkdir()
        _component(resources, "builtin-kv", "secretstores.azure.keyvault", {"vaultName": VAULT_NAME})
        _component(resources, "bridge-kv", "secretstores.secretbridge", {
            "backend": "keyvault", "vaultUri": f"https://{address}:443", "disableChallengeResourceVerification": "true",
            "cacheTTL": "0"})
        _component(resources, "builtin-file", "secretstores.local.file", {"secretsFile": str(secrets_file)})
        _component(resources, "bridge-file", "secretstores.secretbridge", {"backend": "file",
                                                                           "secretsFile": str(secrets_file)})
        _component(resources, "builtin-multi", "secretstores.local.file",
                   {"secretsFile": str(secrets_file), "multiValued": "true"})
        _component(resources, "bridge-multi", "secretstores.secretbridge",
                   {"backend": "file", "secretsFile": str(secrets_file), "multiValued": "true"})
        hosts = tmp_path / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n{address} {VAULT_HOST}\n")
        http_port, grpc_port = free_port(), free_port()
        command = daprd_command(daprd, resources=resources, http=http_port, grpc=grpc_port, config=None)
        env = daprd_env(bridge.socket_path.parent, dict(os.environ))
        log = (tmp_path / "daprd.log").open("wb")
        # daprd alone sees the vault's real name at the double: its own mount namespace and /etc/hosts.
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts), *command],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: http_get(f"http://127.0.0.1:{http_port}/v1.0/healthz")[0] == 204, "daprd",
                       process, timeout=90)
            first = versions["db-password"]
            for case in KEYVAULT_CASES:
                fill = lambda text: text.replace("{version:first}", first)  # noqa: E731
                _compare(case, _ask(http_port, "builtin-kv", case, fill), _ask(http_port, "bridge-kv", case, fill))
            for case in FILE_CASES:
                _compare(case, _ask(http_port, "builtin-file", case), _ask(http_port, "bridge-file", case))
            for case in MULTI_VALUED_CASES:
                _compare(case, _ask(http_port, "builtin-multi", case), _ask(http_port, "bridge-multi", case))
            # Both stores really read the double: the built-in under the vault's name, secretbridge by address.
            assert vault.count("get") > 0
        except BaseException:
            print((tmp_path / "daprd.log").read_text(errors="replace")[-6000:])
            raise
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def _fill_vault(vault: FakeKeyVault) -> dict[str, str]:
    """Put VAULT_CONTENT in the double; the first version id of each secret."""
    versions: dict[str, str] = {}
    now = time.time()
    for name, history in VAULT_CONTENT.items():
        for index, version in enumerate(history):
            made = vault.set_secret(
                name, str(version["value"]), enabled=bool(version.get("enabled", True)),
                exp=now + float(version["exp"]) if "exp" in version else None,  # type: ignore[arg-type]
                nbf=now + float(version["nbf"]) if "nbf" in version else None,  # type: ignore[arg-type]
            )
            if index == 0:
                versions[name] = made
    return versions
