"""Metrics counted per thread without a lock (the gRPC calls, the cache lookups) read exactly as
prometheus_client's own Counter and Histogram would show the same counts: same names, labels, series
order, buckets and values."""

from __future__ import annotations

import re
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from secretbridge.runtime.metrics import CALL_SECONDS_BUCKETS, CallMetrics, ThreadCounter

#: (instance, method, code, seconds): durations on a bucket's bound, between bounds, past the last one.
CALLS = [
    ("a", "Get", "OK", 0.001),  # on a bound: counted in that bucket (le), as observe does
    ("a", "Get", "OK", 0.0009765625),
    ("(unknown)", "Get", "FAILED_PRECONDITION", 0.25),
    ("a", "Init", "OK", 1.0),
    ("b", "BulkGet", "RESOURCE_EXHAUSTED", 12.0),  # past 10 s: only +Inf
    ("a", "Get", "NOT_FOUND", 0.0025),
]


def _reference(calls: list[tuple[str, str, str, float]]) -> bytes:
    registry = CollectorRegistry()
    requests = Counter("secretbridge_requests_total", "gRPC calls served, by method and status code.",
                       ["instance", "method", "code"], registry=registry)
    seconds = Histogram("secretbridge_request_duration_seconds", "Time to answer a gRPC call, cache hits included.",
                        ["method"], buckets=CALL_SECONDS_BUCKETS, registry=registry)
    for method in ("Init", "Features", "Get", "BulkGet"):  # what the server binds when it starts
        seconds.labels(method)
    for instance, method, code, took in calls:
        requests.labels(instance, method, code).inc()
        seconds.labels(method).observe(took)
    return generate_latest(registry)


def _comparable(text: bytes) -> list[str]:
    """The exposition with creation times and sums (float additions in another order) masked."""
    lines = []
    for line in text.decode().splitlines():
        line = re.sub(r"^(\S+_created\{.*\}) \S+$", r"\1 <time>", line)
        lines.append(re.sub(r"^(\S+_sum\{.*\}) \S+$", r"\1 <sum>", line))
    return lines


def _sums(text: bytes) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\S+_sum\{.*\}) (\S+)$", text.decode(), re.M)}


def test_the_exposition_is_prometheus_clients_own_for_the_same_calls() -> None:
    registry = CollectorRegistry()
    metrics = CallMetrics(registry)
    for call in CALLS[:3]:
        metrics.record(*call)
    # Part of the calls on a thread that has ended by the time of the scrape: its counts stay.
    worker = threading.Thread(target=lambda: [metrics.record(*call) for call in CALLS[3:]])
    worker.start()
    worker.join()
    ours, theirs = generate_latest(registry), _reference(CALLS)
    assert _comparable(ours) == _comparable(theirs)
    assert _sums(ours).keys() == _sums(theirs).keys()
    for series, total in _sums(theirs).items():
        assert abs(_sums(ours)[series] - total) < 1e-9
    assert 'secretbridge_request_duration_seconds_bucket{le="0.001",method="Get"} 2.0' in ours.decode()


def test_calls_from_many_threads_are_all_counted() -> None:
    registry = CollectorRegistry()
    metrics = CallMetrics(registry)
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(5000):
            metrics.record("a", "Get", "OK", 0.0002)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    scraped = []
    while any(thread.is_alive() for thread in threads):  # scrapes while the threads count
        scraped.append(registry.get_sample_value("secretbridge_requests_total",
                                                 {"instance": "a", "method": "Get", "code": "OK"}) or 0.0)
    for thread in threads:
        thread.join()
    assert scraped == sorted(scraped)  # a counter never goes back
    labels = {"instance": "a", "method": "Get", "code": "OK"}
    assert registry.get_sample_value("secretbridge_requests_total", labels) == 40_000
    assert registry.get_sample_value("secretbridge_request_duration_seconds_count", {"method": "Get"}) == 40_000
    assert registry.get_sample_value("secretbridge_request_duration_seconds_bucket",
                                     {"method": "Get", "le": "0.001"}) == 40_000


def test_a_counter_reads_as_prometheus_clients_counter() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = ThreadCounter("x_lookups_total", "Lookups.", ["instance", "result"], registry=ours)
    reference = Counter("x_lookups_total", "Lookups.", ["instance", "result"], registry=theirs)
    for counter in (mine, reference):
        counter.labels("a", "hit")  # bound, never counted: shown at 0
        counter.labels("a", "miss").inc()
        ended = threading.Thread(target=lambda c=counter: c.labels("b", "stale").inc(2.5))
        ended.start()
        ended.join()
        counter.labels("a", "miss").inc()
        with pytest.raises(ValueError):
            counter.labels("a", "miss").inc(-1)
    assert _comparable(generate_latest(ours)) == _comparable(generate_latest(theirs))
    assert ours.get_sample_value("x_lookups_total", {"instance": "a", "result": "miss"}) == 2
