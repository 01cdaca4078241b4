"""One component instance of a pluggable secret store, reached over its own channel.

daprd opens a new gRPC connection per component and tags every call with the
gRPC metadata `x-component-instance: <Component metadata.name>`; the gateway
does the same, so the store sees exactly the traffic daprd would send.
daprd sets no deadline on Get/BulkGet (the store enforces its own timeouts);
only Init is bounded here, by the Component's `initTimeout`.
"""

from __future__ import annotations

import grpc

from secretbridge.gateway.discovery import PluggableStore
from secretbridge.proto.components.v1 import common_pb2, secretstore_pb2, secretstore_pb2_grpc

INSTANCE_HEADER = "x-component-instance"

#: How Go's `codes.Code.String()` spells each status, for daprd-identical error text.
GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


class StoreCallError(Exception):
    """A non-OK status from the store; `str()` is Go's rendering of it, as daprd shows it."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(f"rpc error: code = {GO_CODE_NAMES.get(code, 'Unknown')} desc = {details}")


def _wrap(exc: grpc.aio.AioRpcError) -> StoreCallError:
    return StoreCallError(exc.code(), exc.details() or "")


class ComponentClient:
    """Init, Features, Get and BulkGet for one Component over one channel."""

    def __init__(self, component_name: str, store: PluggableStore) -> None:
        self.component_name = component_name
        self.store = store
        self._channel = grpc.aio.insecure_channel(store.target)
        self._stub = secretstore_pb2_grpc.SecretStoreStub(self._channel)
        self._metadata = ((INSTANCE_HEADER, component_name),)
        self._closed = False

    async def init(self, properties: dict[str, str], timeout: float | None) -> None:
        """Send the resolved `spec.metadata` as a flat string map."""
        request = secretstore_pb2.SecretStoreInitRequest(metadata=common_pb2.MetadataRequest(properties=properties))
        try:
            await self._stub.Init(request, metadata=self._metadata, timeout=timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            raise _wrap(exc) from None

    async def features(self, timeout: float | None = None) -> list[str]:
        """The store's advertised features (daprd shows them as capabilities)."""
        try:
            response = await self._stub.Features(common_pb2.FeaturesRequest(), metadata=self._metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _wrap(exc) from None
        return list(response.features)

    async def get(self, key: str, metadata: dict[str, str]) -> dict[str, str]:
        """One secret's `data` map (may be empty)."""
        request = secretstore_pb2.GetSecretRequest(key=key, metadata=metadata)
        try:
            response = await self._stub.Get(request, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise _wrap(exc) from None
        return dict(response.data)

    async def bulk_get(self, metadata: dict[str, str]) -> dict[str, dict[str, str]]:
        """Every secret the store serves, `{name: {key: value}}`."""
        request = secretstore_pb2.BulkGetSecretRequest(metadata=metadata)
        try:
            response = await self._stub.BulkGet(request, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise _wrap(exc) from None
        return {name: dict(entry.secrets) for name, entry in response.data.items()}

    async def close(self) -> None:
        """Close the channel (daprd sends no RPC on close either); safe to call again."""
        if not self._closed:
            self._closed = True
            await self._channel.close()
