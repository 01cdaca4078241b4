"""Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` HTTP endpoint.

Names follow Prometheus conventions (`secretbridge_*`, base units, `_total`
counters). Labels are bounded: instance (one per Component), backend, method,
code, outcome. A secret's name is never a label (unbounded) and a value never
appears anywhere here.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)

#: The methods `secretbridge_request_duration_seconds` has a series for from the start.
CALL_METHODS = ("Init", "Features", "Get", "BulkGet")
CALL_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))


class _Tally:
    """One thread's counts; only that thread writes to it (no lock), a scrape reads it."""

    __slots__ = ("calls", "seconds")

    def __init__(self) -> None:
        #: (instance label, method, code) -> calls
        self.calls: dict[tuple[str, str, str], int] = {}
        #: method -> [calls per bucket (not cumulative)..., sum of seconds]
        self.seconds: dict[str, list[float]] = {}


class CallMetrics:
    """`secretbridge_requests_total` (a counter) and `secretbridge_request_duration_seconds` (a histogram),
    exposed exactly as prometheus_client's own Counter and Histogram would expose them.

    Why not those: a cache hit is a few microseconds of Python, and a Counter inc plus a Histogram
    observe take three locks and walk the buckets in Python, a fifth of a hit's time on a process
    whose Gets are GIL-bound. Here each thread counts into its own tally without a lock, and a
    scrape adds the tallies up (under a lock only the scrape and a new thread take): the counts
    are exact, a scrape sees each thread's calls up to a moment during the scrape.
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._tallies: list[tuple[threading.Thread, _Tally]] = []
        self._retired = _Tally()  # the tallies of threads that ended, added up
        #: When each series first appeared (prometheus_client's `_created`), in that order.
        self._calls_created: dict[tuple[str, str, str], float] = {}
        self._seconds_created = {method: time.time() for method in CALL_METHODS}
        self._bounds = CALL_SECONDS_BUCKETS
        if registry is not None:
            registry.register(self)

    def record(self, instance: str, method: str, code: str, seconds: float) -> None:
        """Count one call (`instance`: its label; `code`: the status code's name) that took `seconds`."""
        try:
            tally: _Tally = self._local.tally
        except AttributeError:
            tally = self._join()
        key = (instance, method, code)
        calls = tally.calls
        count = calls.get(key)
        if count is None:  # a series this thread has not counted yet: perhaps a new one
            count = 0
            self._calls_created.setdefault(key, time.time())
        calls[key] = count + 1
        spread = tally.seconds.get(method)
        if spread is None:
            spread = tally.seconds[method] = [0.0] * (len(self._bounds) + 1)
            self._seconds_created.setdefault(method, time.time())
        # A duration on a bound falls in that bucket (le), as prometheus_client's observe puts it.
        spread[bisect.bisect_left(self._bounds, seconds)] += 1
        spread[-1] += seconds

    def _join(self) -> _Tally:
        tally = self._local.tally = _Tally()
        with self._lock:
            self._retire_ended()
            self._tallies.append((threading.current_thread(), tally))
        return tally

    def _retire_ended(self) -> None:
        """Fold the tallies of threads that ended into one (under the lock): a pool's threads come and go."""
        alive = []
        for thread, tally in self._tallies:
            if thread.is_alive():
                alive.append((thread, tally))
            else:
                _add(self._retired, tally)
        self._tallies = alive

    def _total(self) -> _Tally:
        with self._lock:
            self._retire_ended()
            total = _Tally()
            _add(total, self._retired)
            for _, tally in self._tallies:
                _add(total, tally)
        return total

    def describe(self) -> Iterable[Metric]:
        return self._families(_Tally())

    def collect(self) -> Iterable[Metric]:
        return self._families(self._total())

    def _families(self, total: _Tally) -> list[Metric]:
        # prometheus_client's switch (PROMETHEUS_DISABLE_CREATED_SERIES), so every metric agrees.
        created = getattr(prometheus_metrics, "_use_created", True)
        calls = CounterMetricFamily(
            "secretbridge_requests_total", "gRPC calls served, by method and status code.",
            labels=("instance", "method", "code"),
        )
        # In the order the series first appeared, as prometheus_client lists its children.
        for key, first in self._calls_created.copy().items():
            if key in total.calls:
                calls.add_metric(key, float(total.calls[key]), created=first if created else None)
        seconds = HistogramMetricFamily(
            "secretbridge_request_duration_seconds", "Time to answer a gRPC call, cache hits included.",
            labels=("method",),
        )
        methods = self._seconds_created.copy()
        for method in methods:
            spread = total.seconds.get(method) or [0.0] * (len(self._bounds) + 1)
            cumulative, buckets = 0.0, []
            for bound, calls_in_bucket in zip(self._bounds, spread, strict=False):
                cumulative += calls_in_bucket
                buckets.append((floatToGoString(bound), cumulative))
            seconds.add_metric((method,), buckets, spread[-1])
        if created:
            for method, first in methods.items():
                seconds.samples.append(Sample(seconds.name + "_created", {"method": method}, first, None))
        return [calls, seconds]


def _add(into: _Tally, tally: _Tally) -> None:
    """Add `tally`'s counts to `into`; copies first, as its thread may be counting meanwhile."""
    for key, count in tally.calls.copy().items():
        into.calls[key] = into.calls.get(key, 0) + count
    for method, spread in tally.seconds.copy().items():
        mine = into.seconds.setdefault(method, [0.0] * len(spread))
        for i, value in enumerate(list(spread)):
            mine[i] += value


#: gRPC calls, counted per thread (see `CallMetrics`).
CALLS = CallMetrics()
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
