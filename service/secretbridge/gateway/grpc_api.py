"""daprd's gRPC runtime API (`dapr.proto.runtime.v1.Dapr`), secrets methods only.

`GetSecret` and `GetBulkSecret` answer with daprd's codes (unknown store:
INVALID_ARGUMENT; denied: PERMISSION_DENIED; store error: INTERNAL with daprd's
message; no store at all: FAILED_PRECONDITION). Every other method keeps the
generated base class's behaviour, UNIMPLEMENTED, because this is not daprd.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import grpc
from dapr.proto.runtime.v1 import dapr_pb2_grpc, secret_pb2

from secretbridge.gateway.secrets import ApiError, SecretsAPI


class SecretsServicer(dapr_pb2_grpc.DaprServicer):
    """The Dapr service with only the two secrets methods implemented."""

    def __init__(self, api: SecretsAPI) -> None:
        self._api = api

    async def GetSecret(
        self, request: secret_pb2.GetSecretRequest, context: grpc.aio.ServicerContext
    ) -> secret_pb2.GetSecretResponse:
        """One secret; an empty map is an OK answer, as in daprd."""
        try:
            data = await self._api.get_secret(request.store_name, request.key, dict(request.metadata))
        except ApiError as error:
            await context.abort(error.grpc_code, error.message)
        return secret_pb2.GetSecretResponse(data=data)

    async def GetBulkSecret(
        self, request: secret_pb2.GetBulkSecretRequest, context: grpc.aio.ServicerContext
    ) -> secret_pb2.GetBulkSecretResponse:
        """Every allowed secret of the store."""
        try:
            data = await self._api.get_bulk_secret(request.store_name, dict(request.metadata))
        except ApiError as error:
            await context.abort(error.grpc_code, error.message)
        return secret_pb2.GetBulkSecretResponse(
            data={name: secret_pb2.SecretResponse(secrets=values) for name, values in data.items()}
        )


class ApiTokenInterceptor(grpc.aio.ServerInterceptor):
    """daprd's API token check on every gRPC call (`dapr-api-token` metadata), with its messages."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        given = dict(details.invocation_metadata or ()).get("dapr-api-token")
        if given is None:
            return _refuse("missing api token in request metadata")
        if not hmac.compare_digest(str(given).encode(), self._token):
            return _refuse("authentication error: api token mismatch")
        return await continuation(details)


def _refuse(message: str) -> grpc.RpcMethodHandler:
    async def abort(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(abort)


def add_to_server(server: grpc.aio.Server, api: SecretsAPI) -> None:
    """Register the Dapr service on `server`."""
    dapr_pb2_grpc.add_DaprServicer_to_server(SecretsServicer(api), server)
