"""Helpers for the gateway tests: a tiny scripted SecretStore on a real Unix socket.

Processes, ports and the end-to-end stack are in tests/stack.py."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection
from secretbridge.proto.components.v1 import common_pb2, secretstore_pb2, secretstore_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
SERVICE_NAME = secretstore_pb2.DESCRIPTOR.services_by_name["SecretStore"].full_name


@dataclass
class Call:
    """One call the scripted store received."""

    method: str
    instance: str
    key: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


class ScriptedStore(secretstore_pb2_grpc.SecretStoreServicer):
    """A SecretStore whose answers come from its Init metadata.

    - `secrets`: JSON `{name: {key: value}}` served by Get and BulkGet.
    - `features`: comma-separated feature strings.
    - `failInit`: a gRPC code name; Init fails with it.
    - Get on a secret named `err-<CODE>` fails with that code; `empty` answers no data.
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.inits: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def _instance(self, context: grpc.ServicerContext) -> str:
        return dict(context.invocation_metadata()).get("x-component-instance", "")

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def Init(self, request, context):
        instance = self._instance(context)
        props = dict(request.metadata.properties)
        self._record(Call("Init", instance, metadata=props))
        if props.get("failInit"):
            context.abort(grpc.StatusCode[props["failInit"]], f"init refused for {instance}")
        self.inits[instance] = props
        return secretstore_pb2.SecretStoreInitResponse()

    def Features(self, request, context):
        instance = self._instance(context)
        self._record(Call("Features", instance))
        raw = self.inits.get(instance, {}).get("features", "")
        return common_pb2.FeaturesResponse(features=[f for f in raw.split(",") if f])

    def _secrets(self, instance: str) -> dict[str, dict[str, str]]:
        return json.loads(self.inits.get(instance, {}).get("secrets", "{}"))

    def Get(self, request, context):
        instance = self._instance(context)
        self._record(Call("Get", instance, key=request.key, metadata=dict(request.metadata)))
        if request.key.startswith("err-"):
            context.abort(grpc.StatusCode[request.key[4:]], f"scripted failure for {request.key}")
        if request.key == "empty":
            return secretstore_pb2.GetSecretResponse()
        secrets = self._secrets(instance)
        if request.key not in secrets:
            context.abort(grpc.StatusCode.NOT_FOUND, f"secret {request.key} not found")
        return secretstore_pb2.GetSecretResponse(data=secrets[request.key])

    def BulkGet(self, request, context):
        instance = self._instance(context)
        self._record(Call("BulkGet", instance, metadata=dict(request.metadata)))
        if request.metadata.get("fail"):
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted bulk failure")
        return secretstore_pb2.BulkGetSecretResponse(
            data={n: secretstore_pb2.SecretResponse(secrets=v) for n, v in self._secrets(instance).items()}
        )

    def Ping(self, request, context):
        return common_pb2.PingResponse()


@contextlib.contextmanager
def scripted_store(
    folder: Path, name: str = "scripted", services: tuple[str, ...] = (SERVICE_NAME,)
) -> Iterator[ScriptedStore]:
    """Serve a `ScriptedStore` on `folder/<name>.sock` with reflection v1alpha listing `services`."""
    store = ScriptedStore()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    secretstore_pb2_grpc.add_SecretStoreServicer_to_server(store, server)
    reflection.enable_server_reflection((*services, reflection.SERVICE_NAME), server)
    server.add_insecure_port(f"unix://{folder / name}.sock")
    server.start()
    try:
        yield store
    finally:
        server.stop(None)
