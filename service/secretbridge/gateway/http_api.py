"""daprd's HTTP secrets API (plus metadata and health) on aiohttp.

Routes, as daprd registers them (the static `bulk` route first, so a secret
literally named `bulk` cannot be read over HTTP, exactly like daprd):

- `GET /v1.0/secrets/{store}/bulk`: 200 `{name: {key: value}}`, filtered by scopes.
- `GET /v1.0/secrets/{store}/{key}`: 200 with the data map, or 204 with no body
  when the store answered an empty map.
- `GET /v1.0/metadata`: the loaded components and their capabilities.
- `GET /v1.0/healthz`, `GET /v1.0/healthz/outbound`: 204 once ready.

Query parameters `metadata.<k>=<v>` become request metadata `{k: v}` (first
value wins). Any other `/v1.0*` path answers 501 naming what this gateway is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

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


def _error_response(error: ApiError) -> web.Response:
    return _json_response(error.http_status, error.body())


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
) -> web.Application:
    """The aiohttp application serving the secrets API over `api`."""

    async def get_bulk(request: web.Request) -> web.Response:
        try:
            data = await api.get_bulk_secret(request.match_info["store"], request_metadata(request))
        except ApiError as error:
            return _error_response(error)
        return _json_response(200, data)

    async def get_one(request: web.Request) -> web.Response:
        try:
            data = await api.get_secret(
                request.match_info["store"], request.match_info["key"], request_metadata(request)
            )
        except ApiError as error:
            return _error_response(error)
        if not data:
            return web.Response(status=204)
        return _json_response(200, data)

    async def get_metadata(request: web.Request) -> web.Response:
        return _json_response(200, metadata())

    async def healthz(request: web.Request) -> web.Response:
        if is_ready():
            return web.Response(status=204)
        return _json_response(500, {"errorCode": "ERR_HEALTH_NOT_READY", "message": "dapr is not ready"})

    async def not_here(request: web.Request) -> web.Response:
        return _json_response(
            501,
            {"errorCode": "ERR_NOT_IMPLEMENTED", "message": f"{request.method} {request.path}: {NOT_DAPRD}"},
        )

    app = web.Application()
    prefix = f"/{API_VERSION}"
    app.router.add_get(prefix + "/secrets/{store}/bulk", get_bulk)
    app.router.add_get(prefix + "/secrets/{store}/{key}", get_one)
    app.router.add_get(prefix + "/metadata", get_metadata)
    app.router.add_get(prefix + "/healthz", healthz)
    app.router.add_get(prefix + "/healthz/outbound", healthz)
    app.router.add_route("*", "/{api:v1\\.0[^/]*}/{rest:.*}", not_here)
    return app
