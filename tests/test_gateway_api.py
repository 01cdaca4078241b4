"""The gateway in-process against a scripted SecretStore on a real Unix socket:
loading order, secretKeyRef/envRef, daprd's HTTP and gRPC shapes and codes, scopes, metadata."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from dapr.proto.runtime.v1 import dapr_pb2_grpc, secret_pb2, state_pb2
from secretbridge.gateway.runtime import Gateway, GatewayError, GatewayOptions

from tests.gateway_support import ScriptedStore, scripted_store
from tests.stack import temp_folder

VAULT_SECRETS = {
    "db": {"pw": "pw-VALUE-1", "user": "user-VALUE-2"},
    "token": {"token": "tok-VALUE-3"},
    "a": {"a": "a-VALUE-4"},
    "b": {"b": "b-VALUE-5"},
    "html": {"html": "<x&y>"},
}
APP_SECRETS = {"k": {"k": "k-VALUE-6"}}
SECRET_VALUES = [v for s in (VAULT_SECRETS, APP_SECRETS) for d in s.values() for v in d.values()]

# The app comes first on disk: it must still be initialised after the store it references.
APP_YAML = f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: app
  namespace: ns1
spec:
  type: secretstores.scripted
  version: v1
  metadata:
    - name: secrets
      value: '{json.dumps(APP_SECRETS)}'
    - name: password
      secretKeyRef: {{name: db, key: pw}}
    - name: user
      secretKeyRef: {{name: db, key: user}}
    - name: token
      secretKeyRef: {{name: token}}
    - name: missing
      secretKeyRef: {{name: err-NOT_FOUND}}
    - name: fromEnv
      envRef: GW_TEST_VARIABLE
    - name: forbidden
      envRef: DAPR_API_TOKEN
auth:
  secretStore: vault
"""
VAULT_YAML = f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: vault
spec:
  type: SecretStores.Scripted
  version: v1
  metadata:
    - name: secrets
      value: '{json.dumps(VAULT_SECRETS)}'
    - name: features
      value: MULTIPLE_KEY_VALUES_PER_SECRET
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: cache
spec:
  type: state.redis
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: ghost
spec:
  type: secretstores.ghost
  version: v1
  ignoreErrors: true  # without it, a secret store with no socket stops the gateway, as it stops daprd
"""
CONFIG_YAML = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
spec:
  secrets:
    scopes:
      - storeName: vault
        deniedSecrets: [b]
      - storeName: app
        defaultAccess: deny
        allowedSecrets: [k, empty, err-INTERNAL]
"""


@dataclass
class Running:
    gateway: Gateway
    store: ScriptedStore
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}/v1.0"

    async def get(self, path: str) -> tuple[int, bytes]:
        async with self.http.get(self.base + path) as reply:
            return reply.status, await reply.read()


def options(resources: Path, folder: Path, config: Path | None = None) -> GatewayOptions:
    return GatewayOptions(
        resources_paths=[str(resources)],
        http_port=0,
        grpc_port=0,
        config=str(config) if config else None,
        socket_folder=str(folder),
        # DAPR_API_TOKEN is set below only to prove envRef never reads it; the API check is tested end to end.
        api_token=None,
    )


@pytest.fixture
async def running(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    monkeypatch.setenv("GW_TEST_VARIABLE", "env-VALUE-7")
    monkeypatch.setenv("DAPR_API_TOKEN", "never-VALUE-8")
    with temp_folder() as folder, scripted_store(folder) as store:
        resources = folder / "resources"
        resources.mkdir()
        (resources / "a-app.yaml").write_text(APP_YAML)
        (resources / "b-vault.yaml").write_text(VAULT_YAML)
        config = folder / "config.yaml"
        config.write_text(CONFIG_YAML)
        gateway = Gateway(options(resources, folder, config))
        await gateway.load()
        await gateway.start()
        try:
            async with aiohttp.ClientSession() as http:
                yield Running(gateway, store, http)
        finally:
            await gateway.stop()


async def test_loading_order_header_and_secret_refs(running: Running) -> None:
    calls = [(c.method, c.instance) for c in running.store.calls]
    # Each component: Init then Features, tagged with its own name; the referenced store first.
    assert calls[:2] == [("Init", "vault"), ("Features", "vault")]
    assert calls[-2:] == [("Init", "app"), ("Features", "app")]
    ref_gets = [c for c in running.store.calls if c.method == "Get"]
    # One Get per secret name (db serves two keys), all on the referenced store, with the namespace.
    assert [(c.instance, c.key, c.metadata) for c in ref_gets] == [
        ("vault", "db", {"namespace": "ns1"}),
        ("vault", "token", {"namespace": "ns1"}),
        ("vault", "err-NOT_FOUND", {"namespace": "ns1"}),
    ]
    props = running.store.inits["app"]
    assert props["password"] == "pw-VALUE-1"
    assert props["user"] == "user-VALUE-2"
    assert props["token"] == "tok-VALUE-3"
    assert props["missing"] == ""
    assert props["fromEnv"] == "env-VALUE-7"
    assert props["forbidden"] == ""
    assert set(running.gateway.loaded) == {"app", "vault"}


async def test_get_shapes_and_204(running: Running) -> None:
    status, body = await running.get("/secrets/vault/db")
    assert status == 200
    assert body == b'{"pw":"pw-VALUE-1","user":"user-VALUE-2"}\n'  # json.Encoder's newline, as daprd
    # Go's encoding/json escapes HTML characters.
    assert (await running.get("/secrets/vault/html"))[1] == b'{"html":"\\u003cx\\u0026y\\u003e"}\n'
    assert await running.get("/secrets/app/empty") == (204, b"")


@pytest.mark.parametrize(
    "code",
    [
        "NOT_FOUND",
        "INVALID_ARGUMENT",
        "PERMISSION_DENIED",
        "FAILED_PRECONDITION",
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "INTERNAL",
        "UNKNOWN",
    ],
)
async def test_store_error_is_500_with_go_status_text(running: Running, code: str) -> None:
    go = {
        "NOT_FOUND": "NotFound",
        "INVALID_ARGUMENT": "InvalidArgument",
        "PERMISSION_DENIED": "PermissionDenied",
        "FAILED_PRECONDITION": "FailedPrecondition",
        "UNAVAILABLE": "Unavailable",
        "DEADLINE_EXCEEDED": "DeadlineExceeded",
        "INTERNAL": "Internal",
        "UNKNOWN": "Unknown",
    }[code]
    status, body = await running.get(f"/secrets/vault/err-{code}")
    assert status == 500
    assert json.loads(body) == {
        "errorCode": "ERR_SECRET_GET",
        "message": f"failed getting secret with key err-{code} from secret store vault: "
        f"rpc error: code = {go} desc = scripted failure for err-{code}",
    }


async def test_unknown_store_is_401_and_denied_is_403_before_the_store(running: Running) -> None:
    status, body = await running.get("/secrets/nosuch/db")
    assert (status, json.loads(body)) == (
        401,
        {"errorCode": "ERR_SECRET_STORE_NOT_FOUND", "message": "failed finding secret store with key nosuch"},
    )
    before = len(running.store.calls)
    status, body = await running.get("/secrets/vault/b")
    assert (status, json.loads(body)) == (
        403,
        {"errorCode": "ERR_PERMISSION_DENIED", "message": 'access denied by policy to get "b" from "vault"'},
    )
    status, _ = await running.get("/secrets/app/notlisted")
    assert status == 403
    assert len(running.store.calls) == before


async def test_bulk_is_filtered_after_the_call_and_errors_are_500(running: Running) -> None:
    status, body = await running.get("/secrets/vault/bulk")
    assert status == 200
    assert json.loads(body) == {k: v for k, v in VAULT_SECRETS.items() if k != "b"}
    assert list(json.loads(body)) == sorted(json.loads(body))
    assert json.loads((await running.get("/secrets/app/bulk"))[1]) == APP_SECRETS
    status, body = await running.get("/secrets/vault/bulk?metadata.fail=1")
    assert (status, json.loads(body)) == (
        500,
        {
            "errorCode": "ERR_SECRET_GET",
            "message": "failed getting secrets from secret store vault: "
            "rpc error: code = Unavailable desc = scripted bulk failure",
        },
    )


async def test_query_metadata_becomes_request_metadata(running: Running) -> None:
    await running.get("/secrets/vault/db?metadata.version_id=2&metadata.version_id=3&other=x&metadata.namespace=n")
    last = running.store.calls[-1]
    assert (last.method, last.key, last.metadata) == ("Get", "db", {"version_id": "2", "namespace": "n"})


async def test_metadata_and_health(running: Running) -> None:
    assert await running.get("/healthz") == (204, b"")
    assert await running.get("/healthz/outbound") == (204, b"")
    status, body = await running.get("/metadata")
    assert status == 200
    meta = json.loads(body)
    assert meta["components"] == [
        {
            "name": "app",
            "type": "secretstores.scripted",
            "version": "v1",
            "resolvedMetadata": {
                "secretKeyRef": ["password", "user", "token"],
                "envRef": ["fromEnv"],
                "unresolved": ["missing", "forbidden"],
            },
        },
        {
            "name": "vault",
            "type": "SecretStores.Scripted",
            "version": "v1",
            "capabilities": ["MULTIPLE_KEY_VALUES_PER_SECRET"],
        },
    ]
    assert "not daprd" in meta["runtimeVersion"]
    for value in [*SECRET_VALUES, "env-VALUE-7"]:
        assert value.encode() not in body
    status, body = await running.get("/state/store/key")
    assert status == 501 and b"NOT daprd" in body


async def test_grpc_api_codes(running: Running) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.gateway.grpc_port}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        reply = await stub.GetSecret(secret_pb2.GetSecretRequest(store_name="vault", key="db"))
        assert dict(reply.data) == VAULT_SECRETS["db"]
        empty = await stub.GetSecret(secret_pb2.GetSecretRequest(store_name="app", key="empty"))
        assert dict(empty.data) == {}
        bulk = await stub.GetBulkSecret(secret_pb2.GetBulkSecretRequest(store_name="vault"))
        assert {k: dict(v.secrets) for k, v in bulk.data.items()} == {
            k: v for k, v in VAULT_SECRETS.items() if k != "b"
        }
        expected = [
            (
                secret_pb2.GetSecretRequest(store_name="nosuch", key="x"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "failed finding secret store with key nosuch",
            ),
            (
                secret_pb2.GetSecretRequest(store_name="vault", key="b"),
                grpc.StatusCode.PERMISSION_DENIED,
                'access denied by policy to get "b" from "vault"',
            ),
            (
                secret_pb2.GetSecretRequest(store_name="vault", key="err-NOT_FOUND"),
                grpc.StatusCode.INTERNAL,
                "failed getting secret with key err-NOT_FOUND from secret store vault: "
                "rpc error: code = NotFound desc = scripted failure for err-NOT_FOUND",
            ),
        ]
        for request, code, message in expected:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetSecret(request)
            assert (info.value.code(), info.value.details()) == (code, message)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetBulkSecret(secret_pb2.GetBulkSecretRequest(store_name="vault", metadata={"fail": "1"}))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetState(state_pb2.GetStateRequest(store_name="vault", key="x"))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_no_secret_value_in_logs(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for path in ("/secrets/vault/db", "/secrets/vault/err-INTERNAL", "/secrets/vault/bulk", "/metadata"):
        await running.get(path)
    text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    for value in SECRET_VALUES:
        assert value not in text


async def test_no_store_at_all() -> None:
    with temp_folder() as folder:
        (folder / "res").mkdir()
        gateway = Gateway(options(folder / "res", folder))
        await gateway.load()
        await gateway.start()
        try:
            url = f"http://127.0.0.1:{gateway.http_port}/v1.0/secrets/x/y"
            async with aiohttp.ClientSession() as http, http.get(url) as reply:
                assert reply.status == 500
                assert (await reply.json())["errorCode"] == "ERR_SECRET_STORES_NOT_CONFIGURED"
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await dapr_pb2_grpc.DaprStub(channel).GetSecret(secret_pb2.GetSecretRequest(store_name="x"))
                assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        finally:
            await gateway.stop()


@pytest.mark.parametrize("ignore", [False, True])
async def test_failed_init_is_fatal_unless_ignore_errors(ignore: bool) -> None:
    yaml = (
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: bad}\n"
        f"spec:\n  type: secretstores.scripted\n  version: v1\n  ignoreErrors: {str(ignore).lower()}\n"
        "  metadata:\n    - {name: failInit, value: FAILED_PRECONDITION}\n"
    )
    with temp_folder() as folder, scripted_store(folder):
        (folder / "c.yaml").write_text(yaml)
        gateway = Gateway(options(folder / "c.yaml", folder))
        if ignore:
            await gateway.load()
            assert gateway.loaded == {}
        else:
            with pytest.raises(GatewayError, match=r"failed to init component bad.*FailedPrecondition"):
                await gateway.load()
        await gateway.stop()


async def test_busy_port_is_a_clear_error() -> None:
    with temp_folder() as folder:
        (folder / "res").mkdir()
        first = Gateway(options(folder / "res", folder))
        await first.start()
        try:
            second = Gateway(options(folder / "res", folder))
            second.options.http_port = first.http_port
            with pytest.raises(GatewayError, match=f"127.0.0.1:{first.http_port}"):
                await second.start()
            third = Gateway(options(folder / "res", folder))
            third.options.grpc_port = first.grpc_port
            with pytest.raises(GatewayError, match="gRPC"):
                await third.start()
        finally:
            await first.stop()
