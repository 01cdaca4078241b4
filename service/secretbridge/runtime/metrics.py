"""Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` HTTP endpoint.

Names follow Prometheus conventions (`secretbridge_*`, base units, `_total`
counters). Labels are bounded: instance (one per Component), backend, method,
code, outcome. A secret's name is never a label (unbounded) and a value never
appears anywhere here.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)

T = TypeVar("T")
#: A labelled series: its label values, in the order of the metric's label names.
Key = tuple[str, ...]

#: The methods `secretbridge_request_duration_seconds` has a series for from the start.
CALL_METHODS = ("Init", "Features", "Get", "BulkGet")
CALL_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _created_series() -> bool:
    """prometheus_client's switch (PROMETHEUS_DISABLE_CREATED_SERIES), so that every metric agrees."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


class _PerThread(Generic[T]):
    """State each thread keeps for itself: only its own thread writes it, so counting takes no lock;
    reading adds every thread's up (under a lock only readers and a thread's first count take).

    Why: a cache hit is a few microseconds of Python on a process whose Gets are GIL-bound, and
    prometheus_client's Counter inc and Histogram observe take a lock each (the observe three, and
    a Python walk of the buckets): a fifth of a hit's time. The counts stay exact; a scrape sees
    each thread's counts as of a moment during the scrape.
    """

    def __init__(self, new: Callable[[], T], add: Callable[[T, T], None]) -> None:
        self._new, self._add = new, add
        #: `.value`: the calling thread's state, once it has counted something.
        self.local = threading.local()
        self._lock = threading.Lock()
        self._owned: list[tuple[threading.Thread, T]] = []
        self._ended = new()  # what threads that ended counted, added up

    def join(self) -> T:
        """The calling thread's state, new: call it when `local.value` is missing."""
        mine = self.local.value = self._new()
        with self._lock:
            self._retire_ended()
            self._owned.append((threading.current_thread(), mine))
        return mine

    def total(self) -> T:
        with self._lock:
            self._retire_ended()
            total = self._new()
            self._add(total, self._ended)
            for _, state in self._owned:
                self._add(total, state)
        return total

    def _retire_ended(self) -> None:
        """Fold the state of threads that ended into one (a pool's threads come and go)."""
        alive = []
        for thread, state in self._owned:
            if thread.is_alive():
                alive.append((thread, state))
            else:
                self._add(self._ended, state)
        self._owned = alive


def _add_counts(into: dict[Key, float], counts: dict[Key, float]) -> None:
    for key, count in counts.copy().items():  # a copy: its thread may be counting meanwhile
        into[key] = into.get(key, 0.0) + count


def _add_spreads(into: dict[Key, list[float]], spreads: dict[Key, list[float]]) -> None:
    for key, spread in spreads.copy().items():
        mine = into.setdefault(key, [0.0] * len(spread))
        for i, value in enumerate(list(spread)):
            mine[i] += value


class _Series:
    """The series of a metric in the order they first appeared (as prometheus_client lists a
    metric's children), each with its creation time (the `_created` series)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.created: dict[Key, float] = {}

    def key(self, values: Sequence[object]) -> Key:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {', '.join(self.labelnames)}")
        key = tuple(str(value) for value in values)
        self.created.setdefault(key, time.time())
        return key

    def family(self, totals: dict[Key, float]) -> Metric:
        """The series as a prometheus_client `Counter` shows them, with these counts."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created = _created_series()
        for key, first in self.created.copy().items():
            family.add_metric(key, totals.get(key, 0.0), created=first if created else None)
        return family

    def histogram(self, bounds: Sequence[float], totals: dict[Key, list[float]]) -> Metric:
        """The series as a prometheus_client `Histogram` with these `bounds` (+Inf last) shows them;
        `totals`: per series, the observations in each bucket (not cumulative), then their sum."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        series = self.created.copy()
        for key in series:
            spread = totals.get(key) or [0.0] * (len(bounds) + 1)
            cumulative, buckets = 0.0, []
            for bound, count in zip(bounds, spread, strict=False):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric(key, buckets, spread[-1])
        if _created_series():
            for key, first in series.items():
                labels = dict(zip(self.labelnames, key, strict=True))
                family.samples.append(Sample(family.name + "_created", labels, first, None))
        return family


class ThreadCounter(_Series):
    """A labelled counter counted per thread (see `_PerThread`), exposed exactly as
    prometheus_client's `Counter` would be: `labels(...).inc()` as there."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        super().__init__(name, documentation, labelnames)
        self._counts: _PerThread[dict[Key, float]] = _PerThread(dict, _add_counts)
        if registry is not None:
            registry.register(self)

    def labels(self, *values: object) -> CounterChild:
        """One series (it shows in /metrics from now on, at 0 until counted)."""
        return CounterChild(self, self.key(values))

    def add(self, key: Key, amount: float = 1.0) -> None:
        """Count `amount` for the series `key` (label values as strings, in order)."""
        try:
            counts: dict[Key, float] = self._counts.local.value
        except AttributeError:
            counts = self._counts.join()
        count = counts.get(key)
        if count is None:  # new to this thread: perhaps a new series
            count = 0.0
            self.created.setdefault(key, time.time())
        counts[key] = count + amount

    def describe(self) -> Iterable[Metric]:
        return [self.family({})]

    def collect(self) -> Iterable[Metric]:
        return [self.family(self._counts.total())]


class CounterChild:
    """One series of a `ThreadCounter`."""

    __slots__ = ("_counter", "_key")

    def __init__(self, counter: ThreadCounter, key: Key) -> None:
        self._counter, self._key = counter, key

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self._counter.add(self._key, amount)


class CallMetrics:
    """gRPC calls: `secretbridge_requests_total` (a counter) and `secretbridge_request_duration_seconds`
    (a histogram by method), exposed exactly as prometheus_client's Counter and Histogram would be.
    One row per (instance, method, code) and thread holds both (see `_PerThread`): a call costs
    one lookup, not one per metric."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.requests = _Series(
            "secretbridge_requests_total", "gRPC calls served, by method and status code.",
            ("instance", "method", "code"),
        )
        self.seconds = _Series(
            "secretbridge_request_duration_seconds", "Time to answer a gRPC call, cache hits included.", ("method",)
        )
        for method in CALL_METHODS:  # shown from the start, as the server always did
            self.seconds.key((method,))
        self.bounds = (*(float(b) for b in CALL_SECONDS_BUCKETS), math.inf)
        #: (instance, method, code) -> [calls, calls in each bucket (not cumulative)..., sum of seconds]
        self._rows: _PerThread[dict[Key, list[float]]] = _PerThread(dict, _add_spreads)
        if registry is not None:
            registry.register(self)

    def record(self, instance: str, method: str, code: str, seconds: float) -> None:
        """Count one call (`instance`: its label; `code`: the status code's name) that took `seconds`."""
        try:
            rows: dict[Key, list[float]] = self._rows.local.value
        except AttributeError:
            rows = self._rows.join()
        key = (instance, method, code)
        row = rows.get(key)
        if row is None:  # new to this thread: perhaps a new series
            row = rows[key] = [0.0] * (len(self.bounds) + 2)
            self.requests.created.setdefault(key, time.time())
            self.seconds.created.setdefault((method,), time.time())
        row[0] += 1
        # A duration on a bound falls in that bucket (le), as prometheus_client's observe puts it.
        row[1 + bisect.bisect_left(self.bounds, seconds)] += 1
        row[-1] += seconds

    def describe(self) -> Iterable[Metric]:
        return self._families({})

    def collect(self) -> Iterable[Metric]:
        return self._families(self._rows.total())

    def _families(self, rows: dict[Key, list[float]]) -> list[Metric]:
        by_method: dict[Key, list[float]] = {}
        for (_, method, _), row in rows.items():
            _add_spreads(by_method, {(method,): row[1:]})
        return [self.requests.family({key: row[0] for key, row in rows.items()}),
                self.seconds.histogram(self.bounds, by_method)]


#: gRPC calls, counted per thread (see `_PerThread`).
CALLS = CallMetrics()
#: Counted per thread: a hit is counted on every cache hit (see `_PerThread`).
CACHE_LOOKUPS = ThreadCounter(
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
