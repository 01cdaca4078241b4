"""The wire contract with daprd: protos, socket, reflection, health, instances."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from secretbridge.core.sockets import socket_folder
from secretbridge.proto import generate
from secretbridge.proto.components.v1 import secretstore_pb2
from secretbridge.runtime.server import SecretBridgeServer, ServerOptions

from tests.support import Bridge, serve_bridge, short_tempdir


def test_committed_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert written, "protoc produced nothing"
    committed_dir = generate.PROTO_DIR
    for fresh in written:
        committed = committed_dir / fresh.name
        assert committed.exists(), f"{fresh.name} is not committed; run make proto"
        assert committed.read_text() == fresh.read_text(), f"{fresh.name} is stale; run make proto"


# Upstream's field tables (dapr/dapr dapr/proto/components/v1/secretstore.proto, common.proto).
UPSTREAM_FIELDS = {
    "SecretStoreInitRequest": [("metadata", 1, "dapr.proto.components.v1.MetadataRequest")],
    "SecretStoreInitResponse": [],
    "GetSecretRequest": [("key", 1, "string"), ("metadata", 2, "map<string,string>")],
    "GetSecretResponse": [("data", 1, "map<string,string>")],
    "BulkGetSecretRequest": [("metadata", 1, "map<string,string>")],
    "SecretResponse": [("secrets", 1, "map<string,string>")],
    "BulkGetSecretResponse": [("data", 1, "map<string,dapr.proto.components.v1.SecretResponse>")],
}


def _type_of(field) -> str:  # type: ignore[no-untyped-def]
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return f"map<{_type_of(key)},{_type_of(value)}>"
    if field.message_type is not None:
        return field.message_type.full_name
    return {9: "string"}[field.type]


def test_messages_and_service_are_wire_identical_to_upstream() -> None:
    descriptor = secretstore_pb2.DESCRIPTOR
    assert descriptor.package == "dapr.proto.components.v1"
    for message, fields in UPSTREAM_FIELDS.items():
        got = [(f.name, f.number, _type_of(f)) for f in descriptor.message_types_by_name[message].fields]
        assert got == fields, message
    service = descriptor.services_by_name["SecretStore"]
    assert service.full_name == "dapr.proto.components.v1.SecretStore"
    assert {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods} == {
        "Init": ("dapr.proto.components.v1.SecretStoreInitRequest", "dapr.proto.components.v1.SecretStoreInitResponse"),
        "Features": ("dapr.proto.components.v1.FeaturesRequest", "dapr.proto.components.v1.FeaturesResponse"),
        "Get": ("dapr.proto.components.v1.GetSecretRequest", "dapr.proto.components.v1.GetSecretResponse"),
        "BulkGet": ("dapr.proto.components.v1.BulkGetSecretRequest", "dapr.proto.components.v1.BulkGetSecretResponse"),
        "Ping": ("dapr.proto.components.v1.PingRequest", "dapr.proto.components.v1.PingResponse"),
    }


def test_daprd_style_discovery_lists_the_secret_store_over_reflection_v1alpha(bridge: Bridge) -> None:
    # daprd: grpcreflect.NewClientV1Alpha(...).ListServices() on every socket in the folder.
    stub = reflection_pb2_grpc.ServerReflectionStub(bridge.channel)
    replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = [s.name for s in replies[0].list_services_response.service]
    assert "dapr.proto.components.v1.SecretStore" in names
    # The socket file name minus its extension is the component type daprd registers.
    assert bridge.socket_path.name == "secretbridge.sock"


def test_health_service_reports_serving(bridge: Bridge) -> None:
    stub = health_pb2_grpc.HealthStub(bridge.channel)
    for service in ("", "dapr.proto.components.v1.SecretStore"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_socket_is_for_its_owner_and_group_only_by_default(bridge: Bridge) -> None:
    info = bridge.socket_path.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660, oct(info.st_mode)
    assert info.st_gid == os.getegid()


def test_socket_folder_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAPR_COMPONENTS_SOCKETS_FOLDER", raising=False)
    monkeypatch.delenv("DAPR_COMPONENT_SOCKETS_FOLDER", raising=False)
    assert socket_folder() == Path("/tmp/dapr-components-sockets")
    monkeypatch.setenv("DAPR_COMPONENT_SOCKETS_FOLDER", "/injector")
    assert socket_folder() == Path("/injector")
    monkeypatch.setenv("DAPR_COMPONENTS_SOCKETS_FOLDER", "/daprd")
    assert socket_folder() == Path("/daprd")
    assert socket_folder("/flag") == Path("/flag")


def test_a_stale_socket_file_is_replaced_and_a_live_one_is_not() -> None:
    folder = short_tempdir()
    try:
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(folder / "secretbridge.sock"))
        stale.close()  # the file stays, nothing listens: what a crashed process leaves
        first = SecretBridgeServer(ServerOptions(socket_folder=folder, http_port=None)).start()
        try:
            Bridge(first.socket_path).ping()
            with pytest.raises(Exception, match="another process is serving"):
                SecretBridgeServer(ServerOptions(socket_folder=folder, http_port=None)).start()
            Bridge(first.socket_path).ping()  # the first server still owns its socket
        finally:
            first.stop()
        assert not (folder / "secretbridge.sock").exists()
        (folder / "secretbridge.sock").write_text("not a socket")
        with pytest.raises(Exception, match="not a socket"):
            SecretBridgeServer(ServerOptions(socket_folder=folder, http_port=None)).start()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_custom_name_gives_its_own_socket() -> None:
    with serve_bridge(name="vault-py") as bridge:
        assert bridge.socket_path.name == "vault-py.sock"
        bridge.ping()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_two_instances_with_different_files_are_served_side_by_side(bridge: Bridge, tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", '{"shared": "from-a", "only-a": "1"}')
    b = _write(tmp_path / "b.json", '{"shared": "from-b"}')
    bridge.init({"backend": "file", "secretsFile": str(a)}, instance="store-a")
    bridge.init({"backend": "file", "secretsFile": str(b)}, instance="store-b")
    for _ in range(2):  # the second time, the same request bytes meet the answers each instance kept
        assert bridge.get("shared", instance="store-a") == {"shared": "from-a"}
        assert bridge.get("shared", instance="store-b") == {"shared": "from-b"}
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("only-a", instance="store-b")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "store-b" in err.value.details() and "only-a" in err.value.details()


def test_calls_without_the_header_use_the_default_instance(bridge: Bridge, tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", '{"k": "v"}')
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("k", instance=None)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    bridge.init({"backend": "file", "secretsFile": str(path)}, instance=None)
    assert bridge.get("k", instance=None) == {"k": "v"}
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("k", instance="named")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "instance 'named' is not initialised" in err.value.details()


def test_reinit_replaces_the_instance_and_a_failed_reinit_leaves_nothing(bridge: Bridge, tmp_path: Path) -> None:
    first = _write(tmp_path / "one.json", '{"k": "one"}')
    second = _write(tmp_path / "two.yaml", "k: two\nnested:\n  deep: x\n")
    bridge.init({"backend": "file", "secretsFile": str(first)})
    assert bridge.get("k") == {"k": "one"}
    bridge.init({"backend": "file", "secretsFile": str(second), "multiValued": "true"})
    assert bridge.get("k") == {"k": "two"}
    assert bridge.features() == ["MULTIPLE_KEY_VALUES_PER_SECRET"]
    with pytest.raises(grpc.RpcError) as err:
        bridge.init({"backend": "file", "secretsFile": str(tmp_path / "missing.json")})
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "secretsFile" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("k")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_features_is_empty_for_single_valued_instances(bridge: Bridge, tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", '{"a": {"b": "c"}}')
    bridge.init({"backend": "file", "secretsFile": str(path)})
    assert bridge.features() == []
    bridge.init({"backend": "env"}, instance="env")
    assert bridge.features(instance="env") == []


def test_two_hundred_concurrent_gets_on_one_channel_all_succeed(bridge: Bridge, tmp_path: Path) -> None:
    secrets = {f"s{i}": f"value-{i}" for i in range(50)}
    import json

    path = _write(tmp_path / "many.json", json.dumps(secrets))
    bridge.init({"backend": "file", "secretsFile": str(path)})
    start = threading.Barrier(200)

    def read(i: int) -> dict[str, str]:
        start.wait()
        return bridge.get(f"s{i % 50}")

    with ThreadPoolExecutor(200) as pool:
        results = list(pool.map(read, range(200)))
    assert results == [{f"s{i % 50}": f"value-{i % 50}"} for i in range(200)]


def test_one_mib_of_request_metadata_and_a_one_mib_value(bridge: Bridge, tmp_path: Path) -> None:
    import json

    big = "x" * (1 << 20)
    path = _write(tmp_path / "big.json", json.dumps({"big": big}))
    bridge.init({"backend": "file", "secretsFile": str(path)})
    assert bridge.get("big", metadata={"namespace": "ns", "padding": "p" * (1 << 20)}) == {"big": big}
    assert bridge.bulk_get(metadata={"padding": "p" * (1 << 20)})["big"] == {"big": big}


def test_ping_answers(bridge: Bridge) -> None:
    bridge.ping(instance=None)
    bridge.ping(instance="anything")


def test_the_socket_goes_where_daprds_variable_says(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The socket folder comes from daprd's variable when no flag is given.
    folder = short_tempdir()
    monkeypatch.setenv("DAPR_COMPONENTS_SOCKETS_FOLDER", str(folder))
    try:
        server = SecretBridgeServer(ServerOptions(socket_folder=socket_folder(), http_port=None)).start()
        try:
            assert server.socket_path == folder / "secretbridge.sock"
            assert os.path.exists(server.socket_path)
        finally:
            server.stop()
        assert not os.path.exists(folder / "secretbridge.sock")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
