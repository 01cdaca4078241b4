"""A small app that reads secrets the way any Dapr app does: through the sidecar's secrets API.

It neither knows nor cares whether daprd or `secretbridge gateway` answers, nor which backend
(local file, Key Vault, Container Apps) sits behind the store: only the Component YAML differs.

    DAPR_HTTP_PORT=3500 DAPR_GRPC_PORT=50001 python examples/read_secrets.py localsecrets db-password

By default it prints secret names and value lengths only; `--json` prints everything it read
(values included) as one JSON object, which the end-to-end tests parse.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import grpc
from dapr.clients import DaprClient


def read_grpc(store: str, keys: list[str], metadata: dict[str, str]) -> dict[str, Any]:
    """Every key with the dapr SDK over gRPC, then the bulk read; errors as {code, details}."""
    out: dict[str, Any] = {"get": {}, "bulk": None}
    # DaprClient() waits for the sidecar's /v1.0/healthz/outbound on DAPR_HTTP_PORT first.
    with DaprClient() as client:
        for key in keys:
            try:
                out["get"][key] = {"data": dict(client.get_secret(store, key, secret_metadata=metadata).secret)}
            except grpc.RpcError as error:
                out["get"][key] = {"code": error.code().name, "details": error.details()}
        try:
            out["bulk"] = {"data": client.get_bulk_secret(store, secret_metadata=metadata).secrets}
        except grpc.RpcError as error:
            out["bulk"] = {"code": error.code().name, "details": error.details()}
    return out


def _body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    return json.loads(raw) if "json" in content_type else raw.decode(errors="replace").strip()


def _http(url: str) -> dict[str, Any]:
    # As every Dapr app does when the sidecar requires an API token.
    token = os.environ.get("DAPR_API_TOKEN")
    request = urllib.request.Request(url, headers={"dapr-api-token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return {"status": reply.status, "body": _body(reply.read(), reply.headers.get("Content-Type", ""))}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "body": _body(error.read(), error.headers.get("Content-Type", ""))}


def read_http(store: str, keys: list[str], metadata: dict[str, str]) -> dict[str, Any]:
    """The same reads over plain HTTP (`GET /v1.0/secrets/...`)."""
    host = os.environ.get("DAPR_RUNTIME_HOST", "127.0.0.1")
    base = f"http://{host}:{os.environ.get('DAPR_HTTP_PORT', '3500')}/v1.0/secrets/{urllib.parse.quote(store)}"
    query = urllib.parse.urlencode({f"metadata.{k}": v for k, v in metadata.items()})
    suffix = f"?{query}" if query else ""
    return {
        "get": {key: _http(f"{base}/{urllib.parse.quote(key, safe='')}{suffix}") for key in keys},
        "bulk": _http(f"{base}/bulk{suffix}"),
    }


def summary(result: dict[str, Any]) -> str:
    """Names and value lengths only: an example should not print secrets on a screen by default."""
    lines = []
    for transport, reads in result.items():
        for key, answer in reads["get"].items():
            data = answer.get("data") or answer.get("body")
            if isinstance(data, dict) and "errorCode" not in data and "code" not in answer:
                shown = ", ".join(f"{k} ({len(v)} chars)" for k, v in sorted(data.items()))
                lines.append(f"{transport} {key}: {shown}")
            else:
                lines.append(f"{transport} {key}: {answer}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="the secret store Component's metadata.name")
    parser.add_argument("keys", nargs="+", help="secret names to read")
    parser.add_argument("--metadata", action="append", default=[], metavar="K=V", help="request metadata")
    parser.add_argument("--json", action="store_true", help="print everything read, values included, as JSON")
    args = parser.parse_args(argv)
    metadata = dict(item.split("=", 1) for item in args.metadata)
    result = {
        "grpc": read_grpc(args.store, args.keys, metadata),
        "http": read_http(args.store, args.keys, metadata),
    }
    print(json.dumps(result, sort_keys=True) if args.json else summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
