"""The cache's contract, against a scripted backend whose every call is counted.

The clock is moved by the test (no sleeping through TTLs, no timing asserts);
the same behaviour is proven end to end against the Key Vault test double in
test_keyvault_cache.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from typing import Any, ClassVar

import pytest
from secretbridge.backends.contract import CACHE_PROPERTIES, SecretStore
from secretbridge.core.errors import DeadlineExceeded, FailedPrecondition, NotFound, Unavailable
from secretbridge.core.metadata import parse_metadata
from secretbridge.runtime.cache import CachedStore
from secretbridge.runtime.metrics import REFRESHES, STALE_SERVED


class ScriptedStore(SecretStore):
    """A remote-like backend: values in a dict, failures switched on by the test."""

    backend: ClassVar[str] = "scripted"
    summary: ClassVar[str] = "test backend"
    remote: ClassVar[bool] = True
    supports_versions: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.values: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.failure: Exception | None = None
        self.gate: asyncio.Event | None = None  # when set, calls wait for it
        self.in_flight = 0
        self.most_in_flight = 0

    async def _enter(self, what: str) -> None:
        self.calls[what] += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0)
        finally:
            self.in_flight -= 1
        if self.failure is not None:
            raise self.failure

    async def get(self, name: str, version: str | None = None) -> dict[str, str]:
        await self._enter(f"{name}@{version}" if version else name)
        if name not in self.values:
            raise NotFound(f"secret {name!r} not found")
        return {name: self.values[name] + (f"@{version}" if version else "")}

    async def bulk_get(self, limit: int | None = None) -> dict[str, dict[str, str]]:
        await self._enter("*bulk*")
        names = list(self.values)[:limit] if limit else list(self.values)
        return {n: {n: self.values[n]} for n in names}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def make(instance: str = "cache-test", **raw: str) -> tuple[CachedStore, ScriptedStore, Clock]:
    # A read past its TTL waits for its refresh: the scripted backend always answers within this
    # (tests of the bound itself set it).
    raw.setdefault("staleWait", "10s")
    metadata = parse_metadata(CACHE_PROPERTIES, raw)
    store = ScriptedStore(metadata, instance=instance)
    cached = CachedStore(store, metadata, instance=instance)
    clock = Clock()
    cached.clock = clock
    cached.random = lambda: 0.0  # no jitter: exact TTLs
    return cached, store, clock


async def test_a_value_is_read_once_per_ttl_and_rotation_is_seen_after_it() -> None:
    cached, store, clock = await make(cacheTTL="30s")
    store.values["db"] = "v1"
    for _ in range(100):
        assert await cached.get("db") == {"db": "v1"}
    assert store.calls["db"] == 1
    store.values["db"] = "v2"  # rotated in the backend
    clock.now += 29
    assert await cached.get("db") == {"db": "v1"}
    clock.now += 2
    assert await cached.get("db") == {"db": "v2"}
    assert store.calls["db"] == 2


async def test_concurrent_misses_of_one_key_cost_one_backend_call() -> None:
    cached, store, _ = await make()
    store.values["db"] = "v"
    store.gate = asyncio.Event()
    readers = [asyncio.create_task(cached.get("db")) for _ in range(50)]
    await asyncio.sleep(0.01)
    store.gate.set()
    assert await asyncio.gather(*readers) == [{"db": "v"}] * 50
    assert store.calls["db"] == 1


async def test_one_caller_giving_up_does_not_cancel_the_read_others_wait_on() -> None:
    cached, store, _ = await make()
    store.values["db"] = "v"
    store.gate = asyncio.Event()
    quitter = asyncio.create_task(cached.get("db"))
    patient = asyncio.create_task(cached.get("db"))
    await asyncio.sleep(0.01)
    quitter.cancel()
    store.gate.set()
    assert await patient == {"db": "v"}
    assert store.calls["db"] == 1


async def test_not_found_is_remembered_for_the_negative_ttl() -> None:
    cached, store, clock = await make(negativeCacheTTL="5s")
    for _ in range(20):
        with pytest.raises(NotFound):
            await cached.get("typo")
    assert store.calls["typo"] == 1
    store.values["typo"] = "created"
    clock.now += 6
    assert await cached.get("typo") == {"typo": "created"}
    assert store.calls["typo"] == 2


async def test_a_deleted_secret_is_not_served_from_an_old_entry() -> None:
    cached, store, clock = await make(cacheTTL="10s", negativeCacheTTL="0")
    store.values["db"] = "v"
    await cached.get("db")
    del store.values["db"]
    clock.now += 11
    with pytest.raises(NotFound):
        await cached.get("db")
    with pytest.raises(NotFound):
        await cached.get("db")
    assert store.calls["db"] == 3  # negative caching off: each miss asks


async def test_stale_values_are_served_during_an_outage_until_max_stale(caplog: pytest.LogCaptureFixture) -> None:
    cached, store, clock = await make(instance="stale-test", cacheTTL="30s", maxStale="1h")
    store.values["db"] = "good"
    await cached.get("db")
    store.failure = Unavailable("the vault cannot be reached (connection refused)")
    served_before = STALE_SERVED.labels("stale-test", "scripted")._value.get()
    clock.now += 31
    with caplog.at_level(logging.WARNING):
        assert await cached.get("db") == {"db": "good"}
    assert STALE_SERVED.labels("stale-test", "scripted")._value.get() == served_before + 1
    warning = next(r for r in caplog.records if r.getMessage().startswith("backend failing"))
    assert warning.instance == "stale-test" and warning.secret == "db"  # type: ignore[attr-defined]
    assert "good" not in caplog.text
    clock.now += 3600  # now 1 h past the TTL, just within maxStale... then past it
    clock.now += 1
    with pytest.raises(Unavailable) as err:
        await cached.get("db")
    assert "connection refused" in err.value.message and "maxStale" in err.value.message
    store.failure = None
    assert await cached.get("db") == {"db": "good"}


async def test_a_timeout_is_served_stale_too_and_surfaces_as_deadline_exceeded_without_one() -> None:
    cached, store, clock = await make(cacheTTL="1s", requestTimeout="50ms")
    store.values["db"] = "v"
    await cached.get("db")
    store.gate = asyncio.Event()  # the backend hangs
    clock.now += 2
    assert await cached.get("db") == {"db": "v"}
    with pytest.raises(DeadlineExceeded, match="requestTimeout"):
        await cached.get("never-read")


async def test_decisions_are_not_hidden_behind_stale_values() -> None:
    cached, store, clock = await make(cacheTTL="1s")
    store.values["db"] = "v"
    await cached.get("db")
    store.failure = FailedPrecondition("secret 'db' is disabled in Key Vault")
    clock.now += 2
    with pytest.raises(FailedPrecondition):
        await cached.get("db")


async def test_hot_keys_are_refreshed_ahead_of_expiry() -> None:
    cached, store, clock = await make(instance="ahead", cacheTTL="10s")
    store.values["db"] = "v1"
    await cached.get("db")
    store.values["db"] = "v2"
    clock.now += 7  # not yet in the last fifth
    assert await cached.get("db") == {"db": "v1"}
    assert store.calls["db"] == 1
    before = REFRESHES.labels("ahead", "ok")._value.get()
    clock.now += 1.5  # in the last fifth: answered at once, refreshed behind
    assert await cached.get("db") == {"db": "v1"}
    for _ in range(20):
        await asyncio.sleep(0)
    assert store.calls["db"] == 2
    assert REFRESHES.labels("ahead", "ok")._value.get() == before + 1
    clock.now += 1  # the old entry would have expired by now; the refreshed one has not
    assert await cached.get("db") == {"db": "v2"}
    assert store.calls["db"] == 2


async def test_the_fast_path_answers_from_another_thread_and_triggers_refresh_ahead() -> None:
    cached, store, clock = await make(cacheTTL="10s")
    store.values["db"] = "v"
    assert cached.peek("db", None) is None
    await cached.get("db")
    seen: list[object] = []
    clock.now += 9
    thread = threading.Thread(target=lambda: seen.append(cached.peek("db", None)))
    thread.start()
    thread.join()
    assert seen == [{"db": "v"}]
    for _ in range(20):
        await asyncio.sleep(0)
    assert store.calls["db"] == 2
    clock.now += 20
    assert cached.peek("db", None) is None


async def test_concurrent_backend_calls_are_bounded() -> None:
    cached, store, _ = await make(maxConcurrentRequests="3")
    store.values.update({f"k{i}": str(i) for i in range(20)})
    store.gate = asyncio.Event()
    readers = [asyncio.create_task(cached.get(f"k{i}")) for i in range(20)]
    await asyncio.sleep(0.02)
    assert store.in_flight == 3
    store.gate.set()
    await asyncio.gather(*readers)
    assert store.most_in_flight == 3


async def test_bulk_results_prime_the_get_cache_and_are_cached_themselves() -> None:
    cached, store, _ = await make()
    store.values.update({"a": "1", "b": "2"})
    assert await cached.bulk_get() == {"a": {"a": "1"}, "b": {"b": "2"}}
    assert await cached.get("a") == {"a": "1"}
    assert cached.peek("b", None) == {"b": "2"}
    assert await cached.bulk_get() == {"a": {"a": "1"}, "b": {"b": "2"}}
    assert store.calls == Counter({"*bulk*": 1})


async def test_versioned_reads_are_cached_apart_from_the_latest() -> None:
    cached, store, clock = await make(cacheTTL="10s")
    store.values["db"] = "v"
    assert await cached.get("db", "abc") == {"db": "v@abc"}
    assert await cached.get("db") == {"db": "v"}
    clock.now += 3600  # far past the TTL: a version never changes
    assert await cached.get("db", "abc") == {"db": "v@abc"}
    assert store.calls["db@abc"] == 1


async def test_ttl_zero_turns_the_cache_off() -> None:
    cached, store, _ = await make(cacheTTL="0")
    store.values["db"] = "v"
    for _ in range(3):
        await cached.get("db")
    assert store.calls["db"] == 3


async def test_the_least_recently_used_entries_go_first() -> None:
    cached, store, clock = await make(cacheMaxEntries="10")
    store.values.update({f"k{i}": str(i) for i in range(11)})
    for i in range(10):
        clock.now += 1
        await cached.get(f"k{i}")
    clock.now += 1
    await cached.get("k0")  # k0 is used again, k1 is now the oldest
    await cached.get("k10")  # one over: the oldest tenth goes
    assert cached.peek("k0", None) is not None
    assert cached.peek("k1", None) is None


async def test_during_an_outage_expired_keys_are_answered_at_once_and_refreshed_behind() -> None:
    cached, store, clock = await make(instance="outage-fast", cacheTTL="10s", requestTimeout="50ms")
    store.values.update({"a": "A", "b": "B"})
    await cached.get("a")
    await cached.get("b")
    store.gate = asyncio.Event()  # the backend hangs
    clock.now += 11
    # The first expired read waits staleWait at most for its refresh, and is answered stale;
    # the refresh goes on until requestTimeout says the backend is failing.
    assert await cached.get("a") == {"a": "A"}
    for _ in range(500):
        if cached.failing() is not None:
            break
        await asyncio.sleep(0.01)
    assert cached.failing() is not None
    # From then on an expired key does not wait on the failing backend at all: even the
    # worker-thread fast path answers it, and one probe at a time goes out (core/probes.py).
    calls_before = store.calls["b"]
    assert cached.peek("b", None) == {"b": "B"}
    assert cached.peek("b", None) == {"b": "B"}
    for _ in range(10):
        await asyncio.sleep(0)
    assert store.calls["b"] == calls_before + 1
    # The backend comes back: the refresh lands, and the outage is over.
    store.values["b"] = "B2"
    store.gate.set()
    for _ in range(50):
        await asyncio.sleep(0)
        if cached.peek("b", None) == {"b": "B2"}:
            break
    assert cached.peek("b", None) == {"b": "B2"}
    clock.now += 11
    assert cached.peek("a", None) is None  # expired, and no outage: ask the backend


class PacedStore(ScriptedStore):
    """A backend whose requests wait their turn (a vault paced to its learned rate)."""

    behind = 0.0

    def queued(self) -> float:
        return self.behind


async def test_while_a_refresh_would_wait_its_turn_expired_keys_are_answered_at_once_and_refreshed() -> None:
    metadata = parse_metadata(CACHE_PROPERTIES, {"cacheTTL": "10s", "staleWait": "1h"})
    store = PacedStore(metadata, instance="paced")
    cached = CachedStore(store, metadata, instance="paced")
    clock = Clock()
    cached.clock = clock
    store.values.update({"a": "A", "b": "B"})
    await cached.get("a")
    await cached.get("b")
    store.gate = asyncio.Event()  # nothing the backend is asked answers until the test says so
    store.behind = 7200.0  # a request asked now would wait longer than staleWait for its turn
    clock.now += 11
    # Answered with the held values while their refreshes are still out (waiting staleWait, an
    # hour, would time out here: 30 s is a bound for a busy machine, not a timing) ...
    assert await asyncio.wait_for(cached.get("a"), 30) == {"a": "A"}
    assert cached.peek("b", None) == {"b": "B"}
    for _ in range(10):
        await asyncio.sleep(0)
    # ... and the vault is not failing, only busy: each key's refresh goes out, not one probe.
    assert (store.calls["a"], store.calls["b"]) == (2, 2)
    assert cached.failing() is None
    store.values["a"] = "A2"
    store.gate.set()
    for _ in range(50):
        await asyncio.sleep(0)
    assert cached.peek("a", None) == {"a": "A2"}


async def test_a_reader_joining_a_refresh_out_longer_than_stale_wait_gets_the_held_value_at_once() -> None:
    cached, store, clock = await make(instance="joiner", cacheTTL="10s", staleWait="10m")
    store.values["a"] = "A"
    await cached.get("a")
    store.gate = asyncio.Event()
    clock.now += 11
    first = asyncio.ensure_future(cached.get("a"))  # starts the refresh and waits for it (staleWait at most)
    for _ in range(5):
        await asyncio.sleep(0)
    assert store.calls["a"] == 2 and not first.done()
    clock.now += 601  # the refresh has been out longer than staleWait (maxStale is an hour)
    # At once (30 s bounds a busy machine, not a timing): the bound runs from the refresh's start.
    assert await asyncio.wait_for(cached.get("a"), 30) == {"a": "A"}
    assert not first.done()  # the first reader still waits on its own bound
    store.gate.set()
    assert await first == {"a": "A"}


async def test_stale_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    cached, store, clock = await make(instance="noisy", cacheTTL="1s")
    store.values.update({f"k{i}": str(i) for i in range(5)})
    for i in range(5):
        await cached.get(f"k{i}")
    store.failure = Unavailable("connection refused")
    clock.now += 2
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            for i in range(5):
                assert await cached.get(f"k{i}") == {f"k{i}": str(i)}
        warnings = [r for r in caplog.records if r.getMessage().startswith("backend failing")]
        assert len(warnings) == 1
        clock.now += 31
        await cached.get("k0")
    assert len([r for r in caplog.records if r.getMessage().startswith("backend failing")]) == 2


async def test_during_an_outage_bulk_reads_are_answered_from_the_last_listing_without_waiting() -> None:
    cached, store, clock = await make(instance="bulk-outage", cacheTTL="10s", requestTimeout="50ms")
    store.values.update({"a": "A", "b": "B"})
    assert await cached.bulk_get() == {"a": {"a": "A"}, "b": {"b": "B"}}
    store.failure = Unavailable("connection refused")
    clock.now += 11
    # The first BulkGet past the TTL finds the backend failing and answers from the last listing.
    assert await cached.bulk_get() == {"a": {"a": "A"}, "b": {"b": "B"}}
    assert store.calls["*bulk*"] == 2
    # The next ones do not ask the failing backend again.
    for _ in range(5):
        assert await cached.bulk_get() == {"a": {"a": "A"}, "b": {"b": "B"}}
    assert store.calls["*bulk*"] == 2
    # The backend comes back: a read that reaches it ends the outage, and BulkGet asks it again.
    store.failure = None
    clock.now += 1
    cached.probe_soon(every=0)
    for _ in range(20):
        await asyncio.sleep(0)
    store.values["b"] = "B2"
    assert await cached.bulk_get() == {"a": {"a": "A"}, "b": {"b": "B2"}}
    assert store.calls["*bulk*"] == 3


async def test_bulk_reads_past_max_stale_fail_instead_of_serving_the_old_listing() -> None:
    cached, store, clock = await make(instance="bulk-max-stale", cacheTTL="10s", maxStale="1m")
    store.values.update({"a": "A", "b": "B"})
    assert await cached.bulk_get() == {"a": {"a": "A"}, "b": {"b": "B"}}
    store.failure = Unavailable("connection refused")
    clock.now += 10 + 61  # past the TTL and past maxStale: the backend is asked and fails
    with pytest.raises(Unavailable, match="connection refused"):
        await cached.bulk_get()
    # Now the outage is known; the last listing is still past maxStale.
    with pytest.raises(Unavailable):
        await cached.bulk_get()
    assert store.calls["*bulk*"] == 3


async def test_a_limited_bulk_read_does_not_answer_a_later_unlimited_one() -> None:
    cached, store, _ = await make(cacheTTL="10m")
    store.values.update({"a": "A", "b": "B", "c": "C"})
    assert await cached.bulk_get(1) == {"a": {"a": "A"}}
    assert await cached.bulk_get() == {"a": {"a": "A"}, "b": {"b": "B"}, "c": {"c": "C"}}
    assert await cached.bulk_get(2) == {"a": {"a": "A"}, "b": {"b": "B"}}
    # The unlimited listing answers any later limit.
    assert await cached.bulk_get(1) == {"a": {"a": "A"}}
    assert await cached.bulk_get() == {"a": {"a": "A"}, "b": {"b": "B"}, "c": {"c": "C"}}
    assert store.calls["*bulk*"] == 2


class ListingStore(ScriptedStore):
    """A scripted backend that can also list: `updated` per name, one call per listing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updated: dict[str, float] = {}
        self.extra_names = 0  # secrets the backend holds beyond `values`: more pages

    def rotate(self, name: str, value: str, at: float) -> None:
        self.values[name] = value
        self.updated[name] = at

    async def markers(
        self, names: Any, max_pages: int | None = None
    ) -> tuple[dict[str, tuple[float, str]], int] | None:
        await self._enter("*list*")
        pages = max(1, -(-(len(self.values) + self.extra_names) // 25))
        if max_pages is not None and pages > max_pages:
            return None
        found = {n: (self.updated.get(n, 0.0), f"{self.updated.get(n, 0.0)}") for n in names if n in self.values}
        return found, pages


async def make_listing(**raw: str) -> tuple[CachedStore, ListingStore, Clock, list[float]]:
    metadata = parse_metadata(CACHE_PROPERTIES, raw)
    store = ListingStore(metadata, instance="listing")
    cached = CachedStore(store, metadata, instance="listing")
    clock = Clock()
    wall = [1_000_000.0]
    cached.clock = clock
    cached.wall = lambda: wall[0]
    cached.random = lambda: 0.0
    return cached, store, clock, wall


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_many_hot_keys_are_revalidated_by_one_listing_and_only_the_changed_one_is_read() -> None:
    cached, store, clock, wall = await make_listing(cacheTTL="10s")
    names = [f"k{i:02d}" for i in range(40)]
    for name in names:
        store.rotate(name, "v1", at=wall[0] - 3600)  # last changed an hour before it was read
    for name in names:
        await cached.get(name)
    assert sum(store.calls[n] for n in names) == 40
    store.rotate("k07", "v2", at=wall[0] + 5)
    wall[0] += 10
    clock.now += 8.5  # past refresh-ahead for every key
    for name in names:
        cached.peek(name)  # hot: every one is read again now
    await settle()
    # One listing (2 pages of 25) instead of 40 reads; only the rotated key read again.
    assert store.calls["*list*"] == 1
    assert store.calls["k07"] == 2
    assert sum(store.calls[n] for n in names) == 41
    clock.now += 5  # past the old entries' TTL: the confirmed ones were extended, k07 is new
    assert await cached.get("k07") == {"k07": "v2"}
    assert await cached.get("k01") == {"k01": "v1"}
    assert sum(store.calls[n] for n in names) == 41


async def test_a_value_read_within_seconds_of_its_change_is_read_again_not_confirmed() -> None:
    cached, store, clock, wall = await make_listing(cacheTTL="10s")
    names = [f"k{i:02d}" for i in range(30)]
    for name in names:
        store.rotate(name, "v1", at=wall[0] - 3600)
    store.rotate("k03", "v1", at=wall[0] - 1)  # changed a second before it was read: ambiguous
    for name in names:
        await cached.get(name)
    clock.now += 8.5
    for name in names:
        cached.peek(name)
    await settle()
    assert store.calls["*list*"] == 1
    assert store.calls["k03"] == 2 and store.calls["k04"] == 1


async def test_a_deleted_secret_is_noticed_by_the_listing() -> None:
    cached, store, clock, wall = await make_listing(cacheTTL="10s", negativeCacheTTL="0")
    names = [f"k{i:02d}" for i in range(30)]
    for name in names:
        store.rotate(name, "v1", at=wall[0] - 3600)
    for name in names:
        await cached.get(name)
    del store.values["k09"]
    clock.now += 8.5
    for name in names:
        cached.peek(name)
    await settle()
    assert store.calls["k09"] == 2  # read again, not confirmed
    with pytest.raises(NotFound):
        await cached.get("k09")


async def test_few_hot_keys_in_a_big_backend_are_read_one_by_one() -> None:
    cached, store, clock, wall = await make_listing(cacheTTL="10s")
    store.extra_names = 1000  # 41 pages: more than reading 30 keys
    names = [f"k{i:02d}" for i in range(30)]
    for name in names:
        store.rotate(name, "v1", at=wall[0] - 3600)
    for name in names:
        await cached.get(name)
    clock.now += 8.5
    for name in names:
        cached.peek(name)
    await settle()
    # The capped listing gave up; from then on it is not tried at this size.
    assert store.calls["*list*"] == 1
    assert all(store.calls[n] == 2 for n in names)
    clock.now += 8.5
    for name in names:
        cached.peek(name)
    await settle()
    assert store.calls["*list*"] == 1
    assert all(store.calls[n] == 3 for n in names)


async def test_without_change_detection_every_hot_key_is_read_again() -> None:
    cached, store, clock, wall = await make_listing(cacheTTL="10s", changeDetection="false")
    names = [f"k{i:02d}" for i in range(30)]
    for name in names:
        store.rotate(name, "v1", at=wall[0] - 3600)
        await cached.get(name)
    clock.now += 8.5
    for name in names:
        cached.peek(name)
    await settle()
    assert store.calls["*list*"] == 0
    assert all(store.calls[n] == 2 for n in names)


async def test_jitter_spreads_expiry_and_refresh_ahead_within_their_bounds() -> None:
    cached, store, clock = await make("jitter", cacheTTL="100s")
    draws = iter([0.999, 0.999, 0.0, 0.0])
    cached.random = lambda: next(draws)
    store.values.update({"a": "1", "b": "2"})
    await cached.get("a")
    await cached.get("b")
    assert store.calls["a"] == store.calls["b"] == 1
    clock.now += 90.5  # a lived ~90 s (TTL less 10%), b a full 100
    assert cached.peek("a") is None
    assert cached.peek("b") == {"b": "2"}


class HeldListingStore(ListingStore):
    """Its listings wait for `listing` (the test opens it); single reads do not."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listing = asyncio.Event()

    async def markers(
        self, names: Any, max_pages: int | None = None
    ) -> tuple[dict[str, tuple[float, str]], int] | None:
        await self.listing.wait()
        return await super().markers(names, max_pages)


async def test_after_an_outage_one_probe_finds_the_backend_and_one_listing_revalidates_the_held_keys() -> None:
    metadata = parse_metadata(CACHE_PROPERTIES, {"cacheTTL": "10s", "staleWait": "1h"})
    store = HeldListingStore(metadata, instance="recovery")
    cached = CachedStore(store, metadata, instance="recovery")
    clock, wall = Clock(), [1_000_000.0]
    cached.clock, cached.wall, cached.random = clock, lambda: wall[0], lambda: 0.0
    names = [f"k{i:02d}" for i in range(40)]
    for name in names:
        store.rotate(name, "v1", at=wall[0] - 3600)
        await cached.get(name)
    clock.now += 1
    for name in names:  # hot: read again since it was fetched
        await cached.get(name)
    store.failure = Unavailable("the scripted backend is down")
    clock.now += 10
    wall[0] += 11
    # The outage: every read answered from what is held (staleWait is an hour: only knowing the
    # backend is failing answers them), and the backend asked by one probe, not once per key.
    for name in names:
        assert await asyncio.wait_for(cached.get(name), 30) == {name: "v1"}
    await settle()
    assert cached.failing() is not None
    assert sum(store.calls[n] for n in names) - 40 <= 2
    asked = sum(store.calls[n] for n in names)
    # Back, with k07 rotated meanwhile. The next probe (one second later) finds it answering ...
    store.rotate("k07", "v2", at=wall[0])
    store.failure = None
    wall[0] += 10
    clock.now += 2
    assert cached.peek("k00", None) == {"k00": "v1"}
    await settle()
    assert cached.failing() is None and store.calls["*list*"] == 0
    # ... and one sweep revalidates the rest by a listing; while it is out, reads are answered
    # from what is held, at once (the listing is held by the test).
    for name in names[1:]:
        assert await asyncio.wait_for(cached.get(name), 30) == {name: "v1"}
    store.listing.set()
    await settle()
    assert store.calls["*list*"] == 1
    assert sum(store.calls[n] for n in names) == asked + 2  # the probe (k00) and the rotated k07
    assert await cached.get("k07") == {"k07": "v2"}
    assert await cached.get("k01") == {"k01": "v1"}
    assert sum(store.calls[n] for n in names) == asked + 2  # confirmed by the listing: fresh again
