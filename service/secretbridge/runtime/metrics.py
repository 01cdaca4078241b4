"""Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` HTTP endpoint.

Names follow Prometheus conventions (`secretbridge_*`, base units, `_total`
counters). Labels are bounded: instance (one per Component), backend, method,
code, outcome. A secret's name is never a label (unbounded) and a value never
appears anywhere here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "secretbridge_requests_total",
    "gRPC calls served, by method and status code.",
    ["instance", "method", "code"],
)
REQUEST_SECONDS = Histogram(
    "secretbridge_request_duration_seconds",
    "Time to answer a gRPC call, cache hits included.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CACHE_LOOKUPS = Counter(
    "secretbridge_cache_lookups_total",
    "Cache lookups by result: hit, miss, negative (a remembered not-found), stale.",
    ["instance", "result"],
)
BACKEND_CALLS = Counter(
    "secretbridge_backend_calls_total",
    "Calls made to a backend, by operation and outcome (ok, not_found, error, timeout).",
    ["instance", "backend", "operation", "outcome"],
)
BACKEND_SECONDS = Histogram(
    "secretbridge_backend_call_duration_seconds",
    "Time a backend call took, retries included.",
    ["backend", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CACHE_ENTRIES = Gauge(
    "secretbridge_cache_entries",
    "Secrets (and versions) held in an instance's cache.",
    ["instance"],
)
STALE_SERVED = Counter(
    "secretbridge_stale_served_total",
    "Reads answered with a stale value because the backend failed.",
    ["instance", "backend"],
)
STALE_AGE = Gauge(
    "secretbridge_stale_age_seconds",
    "How far past its TTL the stale value served most recently was; 0 once fresh again.",
    ["instance", "backend"],
)
BACKEND_UP = Gauge(
    "secretbridge_backend_up",
    "1 while an instance's backend answered its latest call or check, 0 while it fails "
    "(the cause is in /readyz?verbose). Readiness does not follow it: a failing backend "
    "whose cache still serves leaves the pod ready.",
    ["instance", "backend"],
)
OUTSIDE_VALIDITY_SERVED = Counter(
    "secretbridge_outside_validity_served_total",
    "Key Vault secrets read from the vault and served although past their expiry or before their "
    "activation date (as Key Vault serves them; refuseExpired refuses them).",
    ["instance", "backend"],
)
REFRESHES = Counter(
    "secretbridge_refresh_ahead_total",
    "Background refreshes of hot keys before they expired, by outcome: ok, error, or unchanged "
    "(confirmed by a listing, not read again).",
    ["instance", "outcome"],
)


def notice_counter(instance: str, backend: str) -> Callable[[str], None]:
    """The hook a store reports its notices through (`SecretStore.on_notice`), counting each."""
    from secretbridge.backends.contract import OUTSIDE_VALIDITY

    served = OUTSIDE_VALIDITY_SERVED.labels(instance, backend)

    def count(event: str) -> None:
        if event == OUTSIDE_VALIDITY:
            served.inc()

    return count


def metrics_text() -> bytes:
    """The Prometheus exposition of every metric."""
    return generate_latest(REGISTRY)


async def start_http(
    host: str, port: int, ready: Callable[[bool], tuple[bool, dict[str, Any]]]
) -> tuple[web.AppRunner, int]:
    """Serve `/metrics`, `/healthz` (the process answers) and `/readyz`.

    `/healthz` never looks at a backend: a liveness probe on it cannot turn a slow
    vault into a restart loop. `ready(verbose)` returns (ready, body) and decides
    `/readyz` (200 or 503); `/readyz?verbose` asks for each instance's causes (never
    a value, a token or a client id). Runs on the I/O loop; returns the runner and the bound port.
    """

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=metrics_text(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ok, body = ready("verbose" in request.query)
        return web.json_response({"status": "ready" if ok else "not ready", **body}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = site._server.sockets if site._server is not None else []  # type: ignore[attr-defined]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound
