"""daprd's HTTP secrets API (plus metadata and health) on aiohttp.

Routes, as daprd registers them (the static `bulk` route first, so a secret
literally named `bulk` cannot be read over HTTP, exactly like daprd):

- `GET /v1.0/secrets/{store}/bulk`: 200 `{name: {key: value}}`, filtered by scopes.
- `GET /v1.0/secrets/{store}/{key}`: 200 with the data map, or 204 with no body
  when the store answered an empty map.
- `GET /v1.0/metadata`: the loaded components and their capabilities.
- `GET /v1.0/healthz`, `GET /v1.0/healthz/outbound`: 204 once ready.

Query parameters `metadata.<k>=<v>` become request metadata `{k: v}` (first
value wins). Paths are cleaned as daprd's router does (repeated slashes folded,
a trailing slash dropped). With `DAPR_API_TOKEN` set, every route but the two
health routes needs a matching `dapr-api-token` header (401 `invalid api token`,
text/plain, as daprd). Success bodies end with the newline Go's `json.Encoder`
writes. Any other `/v1.0*` path answers 501 naming what this gateway is.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from secretbridge.gateway import NOT_DAPRD
from secretbridge.gateway.secrets import ApiError, SecretsAPI

METADATA_PREFIX = "metadata."
API_VERSION = "v1.0"

# Go's encoding/json escapes these inside strings; doing the same keeps bodies byte-identical.
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def go_json(value: Any) -> bytes:
    """Serialise like Go's `json.Marshal`: sorted map keys, no spaces, HTML-safe escapes."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # The escaped characters never occur outside string literals in JSON, so a plain replace is safe.
    for char, escape in _GO_ESCAPES.items():
        text = text.replace(char, escape)
    return text.encode("utf-8")


def _json_response(status: int, value: Any) -> web.Response:
    return web.Response(status=status, body=go_json(value), content_type="application/json")


def _success(value: Any, *, sort_keys: bool = True) -> web.Response:
    # daprd streams success bodies through json.Encoder, which ends them with a newline; its
    # error bodies are written whole, without one.
    body = go_json(value) if sort_keys else json.dumps(value, separators=(",", ":")).encode()
    return web.Response(status=200, body=body + b"\n", content_type="application/json")


def _error_response(error: ApiError) -> web.Response:
    return _json_response(error.http_status, error.body())


#: Routes daprd answers without the API token.
_TOKEN_FREE = ("/v1.0/healthz", "/v1.0/healthz/outbound")


def clean_path(path: str) -> str:
    """The path as daprd's router matches it: repeated slashes folded, no trailing slash."""
    cleaned = re.sub(r"/{2,}", "/", path)
    return cleaned.rstrip("/") or "/"


def request_metadata(request: web.Request) -> dict[str, str]:
    """`metadata.<k>=<v>` query parameters as request metadata, first value of each key."""
    metadata: dict[str, str] = {}
    for name, value in request.query.items():
        if name.startswith(METADATA_PREFIX):
            metadata.setdefault(name[len(METADATA_PREFIX) :], value)
    return metadata


def build_app(
    api: SecretsAPI,
    is_ready: Callable[[], bool],
    metadata: Callable[[], dict[str, Any]],
    api_token: str | None = None,
) -> web.Application:
    """The aiohttp application serving the secrets API over `api` (`api_token`: daprd's DAPR_API_TOKEN).

    One catch-all route cleans the path the way daprd's router does and dispatches on it, so
    `/secrets/s/k/` and `//secrets/s/k` answer as `/secrets/s/k` does there (no redirect).
    """
    prefix = f"/{API_VERSION}"

    async def get_bulk(request: web.Request, store: str) -> web.Response:
        try:
            data = await api.get_bulk_secret(store, request_metadata(request))
        except ApiError as error:
            return _error_response(error)
        return _success(data)

    async def get_one(request: web.Request, store: str, key: str) -> web.Response:
        try:
            data = await api.get_secret(store, key, request_metadata(request))
        except ApiError as error:
            return _error_response(error)
        if not data:
            return web.Response(status=204)
        return _success(data)

    async def healthz() -> web.Response:
        if is_ready():
            return web.Response(status=204)
        return _json_response(500, {"errorCode": "ERR_HEALTH_NOT_READY", "message": "dapr is not ready"})

    async def dispatch(request: web.Request) -> web.Response:
        path = clean_path(request.rel_url.raw_path)
        if api_token is not None and path not in _TOKEN_FREE:
            given = request.headers.get("dapr-api-token", "")
            if not hmac.compare_digest(given.encode(), api_token.encode()):
                return web.Response(status=401, text="invalid api token\n", content_type="text/plain")
        parts = [unquote(p) for p in path.split("/")[1:]]
        if request.method == "GET":
            if path in _TOKEN_FREE:
                return await healthz()
            if path == prefix + "/metadata":
                return _success(metadata(), sort_keys=False)
            if len(parts) == 4 and parts[:2] == [API_VERSION, "secrets"]:
                # The static `bulk` route wins over a secret named bulk, as in daprd.
                if parts[3] == "bulk":
                    return await get_bulk(request, parts[2])
                return await get_one(request, parts[2], parts[3])
            if len(parts) == 3 and parts[:2] == [API_VERSION, "secrets"]:
                # daprd's router hands a secrets path without a key to service invocation, which finds no app id.
                return _json_response(404, {
                    "errorCode": "ERR_DIRECT_INVOKE",
                    "message": "failed getting app id either from the URL path or the header dapr-app-id",
                })
        return _json_response(
            501,
            {"errorCode": "ERR_NOT_IMPLEMENTED", "message": f"{request.method} {request.path}: {NOT_DAPRD}"},
        )

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", dispatch)
    return app
