"""The secrets API behind both transports: daprd's "universal" GetSecret / GetBulkSecret.

Order of checks, as in daprd: no store at all, then unknown store, then (Get
only) secret scopes before the store is called; a store error becomes
`ERR_SECRET_GET` with Go's rendering of the status; BulkGet results are filtered
by the scopes after the call. Each error carries both the HTTP status and the
gRPC code daprd would answer, and daprd's exact message text.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

import grpc

from secretbridge.gateway.client import StoreCallError
from secretbridge.gateway.scopes import SecretScope, is_allowed

log = logging.getLogger("secretbridge.gateway.secrets")


class SecretSource(Protocol):
    """What the API needs of a loaded store (a `ComponentClient`)."""

    async def get(self, key: str, metadata: dict[str, str]) -> dict[str, str]: ...

    async def bulk_get(self, metadata: dict[str, str]) -> dict[str, dict[str, str]]: ...


class ApiError(Exception):
    """A secrets API failure, with daprd's HTTP status, error code, gRPC code and message."""

    def __init__(self, http_status: int, error_code: str, grpc_code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_code = error_code
        self.grpc_code = grpc_code
        self.message = message

    def body(self) -> dict[str, str]:
        """daprd's JSON error body."""
        return {"errorCode": self.error_code, "message": self.message}


def go_quote(text: str) -> str:
    """Go's `%q` for the strings that reach it here: double quotes, backslash escapes."""
    out = ['"']
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif not char.isprintable():
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x80 else (f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"))
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def stores_not_configured() -> ApiError:
    """No secret store is loaded at all."""
    return ApiError(
        500,
        "ERR_SECRET_STORES_NOT_CONFIGURED",
        grpc.StatusCode.FAILED_PRECONDITION,
        "secret store is not configured",
    )


def store_not_found(store: str) -> ApiError:
    """The app named a store that is not loaded (daprd answers 401, not 404)."""
    return ApiError(
        401,
        "ERR_SECRET_STORE_NOT_FOUND",
        grpc.StatusCode.INVALID_ARGUMENT,
        f"failed finding secret store with key {store}",
    )


def permission_denied(store: str, key: str) -> ApiError:
    """The secret scopes refuse this key."""
    return ApiError(
        403,
        "ERR_PERMISSION_DENIED",
        grpc.StatusCode.PERMISSION_DENIED,
        f"access denied by policy to get {go_quote(key)} from {go_quote(store)}",
    )


class SecretsAPI:
    """GetSecret and GetBulkSecret over the loaded stores, with secret scopes applied."""

    def __init__(self, stores: Mapping[str, SecretSource], scopes: Mapping[str, SecretScope]) -> None:
        self.stores = stores
        self.scopes = scopes

    def _store(self, name: str) -> SecretSource:
        if not self.stores:
            raise stores_not_configured()
        store = self.stores.get(name)
        if store is None:
            raise store_not_found(name)
        return store

    async def get_secret(self, store_name: str, key: str, metadata: dict[str, str]) -> dict[str, str]:
        """One secret's data; an empty dict means daprd's 204."""
        store = self._store(store_name)
        if not is_allowed(self.scopes, store_name, key):
            log.info("secret denied by scopes", extra={"store": store_name, "secret": key})
            raise permission_denied(store_name, key)
        try:
            return await store.get(key, metadata)
        except StoreCallError as exc:
            log.info(
                "store refused a secret",
                extra={"store": store_name, "secret": key, "code": exc.code.name},
            )
            raise ApiError(
                500,
                "ERR_SECRET_GET",
                grpc.StatusCode.INTERNAL,
                f"failed getting secret with key {key} from secret store {store_name}: {exc}",
            ) from None

    async def get_bulk_secret(self, store_name: str, metadata: dict[str, str]) -> dict[str, dict[str, str]]:
        """Every secret of the store the scopes allow, `{name: {key: value}}`."""
        store = self._store(store_name)
        try:
            data = await store.bulk_get(metadata)
        except StoreCallError as exc:
            log.info("store refused a bulk read", extra={"store": store_name, "code": exc.code.name})
            raise ApiError(
                500,
                "ERR_SECRET_GET",
                grpc.StatusCode.INTERNAL,
                f"failed getting secrets from secret store {store_name}: {exc}",
            ) from None
        return {name: values for name, values in data.items() if is_allowed(self.scopes, store_name, name)}
