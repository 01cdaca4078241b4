"""End to end through a Dapr runtime: app → (real daprd | secretbridge gateway) → `secretbridge serve`.

Every case runs twice with the same expectations: against the real daprd (the runtime users run)
and against the development gateway, which is held to daprd by running the same app-level cases.
The app is examples/read_secrets.py: the real `dapr` SDK over gRPC, and plain HTTP.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes import FakeKeyVault, FakeManagedIdentity, vault_metadata
from tests.stack import (
    RUNTIMES,
    Stack,
    child_env,
    daprd_binary,
    daprd_command,
    daprd_env,
    free_port,
    http_get,
    run_stack,
    start_command,
    temp_folder,
)
from tests.test_containerapps import AtomicVolume

pytest_plugins = ("tests.fakes.fixtures",)



def component(name: str, metadata: dict[str, str], *, refs: dict[str, str] | None = None,
              secret_store: str | None = None) -> str:
    """A Component YAML for a secretbridge instance (`refs`: property → secretKeyRef name)."""
    items = [f"    - name: {k}\n      value: {json.dumps(v)}" for k, v in metadata.items()]
    items += [f"    - name: {k}\n      secretKeyRef:\n        name: {v}" for k, v in (refs or {}).items()]
    auth = f"auth:\n  secretStore: {secret_store}\n" if secret_store else ""
    return (
        "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
        f"metadata:\n  name: {name}\nspec:\n  type: secretstores.secretbridge\n  version: v1\n"
        "  metadata:\n" + "\n".join(items) + "\n" + auth
    )


SCOPES = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
spec:
  secrets:
    scopes:
      - storeName: local
        deniedSecrets: [internal]
      - storeName: volume
        defaultAccess: deny
        allowedSecrets: [db-password]
"""


@dataclass
class Local:
    """serve + a runtime over file, multi-valued file, env and containerapps Components."""

    stack: Stack
    folder: Path
    volume: AtomicVolume


@pytest.fixture(scope="module", params=list(RUNTIMES))
def local(request: pytest.FixtureRequest) -> Iterator[Local]:
    """One stack per runtime, shared by the module's read-only cases."""
    with temp_folder(f"sb{request.param[:2]}-") as folder:
        (folder / "secrets.json").write_text(json.dumps(
            {"db-password": "file-VALUE-1", "internal": "file-VALUE-2", "nested": {"inner": "file-VALUE-3"}}
        ))
        (folder / "multi.json").write_text(json.dumps({"conn": {"host": "db.local", "port": 5432}}))
        volume = AtomicVolume(folder / "volume")
        volume.write({"db-password": "vol-VALUE-1\n", "api-key": "vol-VALUE-2"})
        resources = folder / "resources"
        resources.mkdir()
        (resources / "components.yaml").write_text("---\n".join([
            component("local", {"backend": "file", "secretsFile": str(folder / "secrets.json")}),
            component("multi", {"backend": "file", "secretsFile": str(folder / "multi.json"),
                                "multiValued": "true"}),
            component("environ", {"backend": "env", "prefix": "SBAPP_"}),
            component("volume", {"backend": "containerapps", "secretsPath": str(folder / "volume")}),
        ]))
        (folder / "config.yaml").write_text(SCOPES)
        env = child_env(SBAPP_TOKEN="env-VALUE-1")
        with run_stack(folder, resources, folder / "config.yaml", env, runtime=request.param) as stack:
            yield Local(stack, folder, volume)


def test_file_store_answers_as_daprd_shapes_them(local: Local) -> None:
    out = local.stack.app("local", "db-password", "nested:inner", "nope")
    grpc, http = out["grpc"], out["http"]
    assert grpc["get"]["db-password"] == {"data": {"db-password": "file-VALUE-1"}}
    assert http["get"]["db-password"] == {"status": 200, "body": {"db-password": "file-VALUE-1"}}
    assert http["get"]["nested:inner"] == {"status": 200, "body": {"nested:inner": "file-VALUE-3"}}
    # Not found is daprd's 500 ERR_SECRET_GET / gRPC INTERNAL carrying our status as text.
    assert grpc["get"]["nope"]["code"] == "INTERNAL"
    assert "rpc error: code = NotFound desc = Get on instance 'local' (file): secret 'nope' not found" in \
        grpc["get"]["nope"]["details"]
    assert http["get"]["nope"]["status"] == 500
    assert http["get"]["nope"]["body"]["errorCode"] == "ERR_SECRET_GET"
    assert "secret 'nope' not found" in http["get"]["nope"]["body"]["message"]
    # The denied secret is refused by the runtime's scopes, and filtered from bulk after the call.
    bulk = {"db-password": {"db-password": "file-VALUE-1"}, "nested:inner": {"nested:inner": "file-VALUE-3"}}
    assert http["bulk"] == {"status": 200, "body": bulk}
    assert grpc["bulk"] == {"data": bulk}


def test_scopes_are_enforced_by_the_runtime(local: Local) -> None:
    out = local.stack.app("local", "internal")
    assert out["http"]["get"]["internal"]["status"] == 403
    assert out["http"]["get"]["internal"]["body"]["errorCode"] == "ERR_PERMISSION_DENIED"
    assert out["grpc"]["get"]["internal"]["code"] == "PERMISSION_DENIED"
    out = local.stack.app("volume", "db-password", "api-key")
    assert out["http"]["get"]["db-password"] == {"status": 200, "body": {"db-password": "vol-VALUE-1\n"}}
    assert out["http"]["get"]["api-key"]["status"] == 403  # defaultAccess: deny, not in allowedSecrets
    assert out["http"]["bulk"] == {"status": 200, "body": {"db-password": {"db-password": "vol-VALUE-1\n"}}}


def test_maxresults_reaches_the_store_from_query_metadata(local: Local) -> None:
    out = local.stack.app("local", "db-password", metadata={"maxresults": "1"})
    assert out["http"]["bulk"] == {"status": 200, "body": {"db-password": {"db-password": "file-VALUE-1"}}}
    assert out["grpc"]["bulk"] == {"data": {"db-password": {"db-password": "file-VALUE-1"}}}
    out = local.stack.app("local", "db-password", metadata={"maxresults": "many"})
    assert out["http"]["bulk"]["status"] == 500
    assert "InvalidArgument" in out["http"]["bulk"]["body"]["message"]
    assert "maxresults" in out["http"]["bulk"]["body"]["message"]


def test_multi_valued_env_and_volume_on_one_socket(local: Local) -> None:
    out = local.stack.app("multi", "conn")
    assert out["http"]["get"]["conn"] == {"status": 200, "body": {"host": "db.local", "port": "5432"}}
    assert out["http"]["bulk"]["body"] == {"conn": {"host": "db.local", "port": "5432"}}
    out = local.stack.app("environ", "TOKEN", "MISSING")
    assert out["http"]["get"]["TOKEN"] == {"status": 200, "body": {"TOKEN": "env-VALUE-1"}}
    assert "code = NotFound" in out["http"]["get"]["MISSING"]["body"]["message"]
    # A kubelet-style swap of the volume is seen on the next read.
    local.volume.write({"db-password": "vol-VALUE-3", "api-key": "vol-VALUE-2"})
    out = local.stack.app("volume", "db-password")
    assert out["http"]["get"]["db-password"] == {"status": 200, "body": {"db-password": "vol-VALUE-3"}}


def test_unknown_store_and_metadata(local: Local) -> None:
    status, body, _ = http_get(f"{local.stack.base}/secrets/nostore/x")
    assert status == 401 and json.loads(body)["errorCode"] == "ERR_SECRET_STORE_NOT_FOUND"
    status, body, _ = http_get(f"{local.stack.base}/metadata")
    assert status == 200
    components = {c["name"]: c for c in json.loads(body)["components"]}
    assert components["local"]["type"] == "secretstores.secretbridge"
    assert components["local"]["version"] == "v1"
    assert set(components) >= {"local", "multi", "environ", "volume"}


@pytest.mark.parametrize("kind", list(RUNTIMES))
def test_api_token_is_enforced(kind: str) -> None:
    with temp_folder("sbtk-") as folder:
        (folder / "s.json").write_text('{"k": "tok-VALUE-1"}')
        resources = folder / "resources"
        resources.mkdir()
        secrets_file = str(folder / "s.json")
        (resources / "c.yaml").write_text(component("local", {"backend": "file", "secretsFile": secrets_file}))
        with run_stack(folder, resources, runtime=kind, api_token="t0ken-for-tests") as stack:
            status, body, _ = http_get(f"{stack.base}/secrets/local/k")
            assert (status, body.strip()) == (401, b"invalid api token")
            assert http_get(f"{stack.base}/healthz")[0] == 204
            out = stack.app("local", "k")  # the SDK sends DAPR_API_TOKEN itself
            assert out["grpc"]["get"]["k"] == {"data": {"k": "tok-VALUE-1"}}
            assert out["http"]["get"]["k"] == {"status": 200, "body": {"k": "tok-VALUE-1"}}
            wrong = stack.app_env() | {"DAPR_API_TOKEN": "wrong"}
            out = stack.app("local", "k", env=wrong)
            assert out["grpc"]["get"]["k"]["code"] == "UNAUTHENTICATED"
            assert out["http"]["get"]["k"]["status"] == 401


@pytest.mark.parametrize("kind", list(RUNTIMES))
@pytest.mark.parametrize("assigned", ["system", "user"])
def test_keyvault_with_managed_identity_and_a_secret_key_ref(
    kind: str, assigned: str, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity
) -> None:
    fake_vault.set_secret("db-password", "kv-VALUE-1")
    first = fake_vault.set_secret("rotated", "kv-VALUE-2")
    fake_vault.set_secret("rotated", "kv-VALUE-3")
    fake_vault.set_secret("retired", "kv-VALUE-4", enabled=False)
    extra = {"azureClientId": "11111111-2222-3333-4444-555555555555"} if assigned == "user" else {}
    with temp_folder("sbkv-") as folder:
        (folder / "app.json").write_text(json.dumps({"flag": "file-VALUE-9"}))
        fake_vault.set_secret("app-secrets-path", str(folder / "app.json"))
        resources = folder / "resources"
        resources.mkdir()
        (resources / "c.yaml").write_text("---\n".join([
            component("vault", {"backend": "keyvault", **vault_metadata(fake_vault, **extra)}),
            # daprd resolves this Component's secretsFile through the Key Vault store above.
            component("appsecrets", {"backend": "file"}, refs={"secretsFile": "app-secrets-path"},
                      secret_store="vault"),
        ]))
        env = child_env()
        with run_stack(folder, resources, None, env, runtime=kind) as stack:
            out = stack.app("vault", "db-password", "retired", "missing")
            http = out["http"]
            assert http["get"]["db-password"] == {"status": 200, "body": {"db-password": "kv-VALUE-1"}}
            assert http["get"]["retired"]["status"] == 500
            assert "FailedPrecondition" in http["get"]["retired"]["body"]["message"]
            assert "disabled" in http["get"]["retired"]["body"]["message"]
            assert "code = NotFound" in http["get"]["missing"]["body"]["message"]
            assert set(http["bulk"]["body"]) == {"db-password", "rotated", "app-secrets-path"}
            out = stack.app("vault", "rotated", metadata={"version_id": first})
            assert out["http"]["get"]["rotated"] == {"status": 200, "body": {"rotated": "kv-VALUE-2"}}
            assert out["grpc"]["get"]["rotated"] == {"data": {"rotated": "kv-VALUE-2"}}
            out = stack.app("appsecrets", "flag")
            assert out["http"]["get"]["flag"] == {"status": 200, "body": {"flag": "file-VALUE-9"}}
            requested = {r.client_id for r in fake_identity.requests}
            assert requested == ({extra["azureClientId"]} if extra else {None})
            stack.stop()
            logs = stack.logs()
    for secret in ("kv-VALUE-1", "kv-VALUE-2", "kv-VALUE-3", "file-VALUE-9", fake_identity.identity_header):
        assert secret not in logs


def test_daprd_needs_the_socket_before_it_starts_and_works_in_the_documented_order() -> None:
    with temp_folder("sbord-") as folder:
        (folder / "s.json").write_text('{"k": "order-VALUE-1"}')
        resources = folder / "resources"
        resources.mkdir()
        secrets_file = str(folder / "s.json")
        (resources / "c.yaml").write_text(component("local", {"backend": "file", "secretsFile": secrets_file}))
        # Wrong order: daprd scans the socket folder once, at start, finds no socket for the Component's type,
        # serves no secret and exits naming the missing store. Its health endpoint is no witness: daprd 1.16
        # and 1.18 alike may answer 204 for an instant, since the runtime marks itself ready while the failed
        # Component's error is still shutting it down. So what is checked is what a user meets.
        early = _daprd_without_its_socket(folder, resources)
        assert 200 not in early.answers, "daprd served a secret with no pluggable socket to read it from"
        assert early.exit_code not in (0, None), f"daprd kept running without the socket:\n{early.log[-2000:]}"
        assert "couldn't find secret store secretstores.secretbridge/v1" in early.log
        # The documented order: secretbridge first, its socket ready, then daprd.
        with run_stack(folder, resources, runtime="daprd") as stack:
            assert stack.app("local", "k")["http"]["get"]["k"] == {"status": 200, "body": {"k": "order-VALUE-1"}}


@dataclass
class _EarlyDaprd:
    answers: set[int]
    exit_code: int | None
    log: str


def _daprd_without_its_socket(folder: Path, resources: Path, bound: float = 90.0) -> _EarlyDaprd:
    """Start daprd before any socket exists and ask it for `local/k` until it exits (or `bound` passes)."""
    http = free_port()
    command = daprd_command(daprd_binary(), resources=resources, http=http, grpc=free_port(), config=None)
    daprd = start_command(command, folder / "daprd-early.log", env=daprd_env(folder, None))
    answers: set[int] = set()
    deadline = time.monotonic() + bound
    try:
        while daprd.popen.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                answers.add(http_get(f"http://127.0.0.1:{http}/v1.0/secrets/local/k", timeout=2)[0])
            time.sleep(0.05)
        exit_code = daprd.popen.poll()
    finally:
        daprd.stop()
    return _EarlyDaprd(answers, exit_code, daprd.log())
