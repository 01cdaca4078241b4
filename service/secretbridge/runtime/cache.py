"""Per-instance cache and resilience in front of a remote store.

The built-in Key Vault store asks the vault on every read; busy apps meet the
vault's throttling (about 4,000 reads per 10 s per vault) and an outage takes
them down. Every remote backend here sits behind `CachedStore`, configured by
the `CACHE_PROPERTIES` each remote Component may set.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from secretbridge.core.certificates import SECRET
from secretbridge.core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    SecretStoreError,
    Unavailable,
    decides_about_secret,
)
from secretbridge.core.metadata import ParsedMetadata, format_duration
from secretbridge.core.names import DEFAULT_VIEW, View, show_name
from secretbridge.core.probes import ProbeGate
from secretbridge.core.urgency import WAITED_ON
from secretbridge.runtime.metrics import (
    BACKEND_CALLS,
    BACKEND_SECONDS,
    BACKEND_UP,
    CACHE_ENTRIES,
    CACHE_LOOKUPS,
    REFRESHES,
    STALE_AGE,
    STALE_SERVED,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A versioned read never changes, so it is kept this long whatever cacheTTL says.
VERSIONED_TTL = 24 * 3600.0
#: Refresh-ahead starts once this share of the TTL has passed (less up to REFRESH_JITTER of it).
REFRESH_AHEAD_AT = 0.8
#: Jitter, as shares of the TTL: an entry lives between (1 - TTL_JITTER) and 1 times cacheTTL, and is
#: refreshed ahead between REFRESH_AHEAD_AT - REFRESH_JITTER and REFRESH_AHEAD_AT of it, so replicas
#: started together (and keys read together) do not all go back to the backend at the same moment.
TTL_JITTER = 0.1
REFRESH_JITTER = 0.15
#: A listing names secrets by pages of this many (Key Vault's largest page).
LIST_PAGE = 25
#: A listed secret updated less than this long (seconds, wall clock) before a value was read may
#: have a newer version the listing cannot tell apart (`updated` has whole seconds): read it again.
MARKER_SETTLE = 5.0
#: BulkGet is many backend calls; it may take this many requestTimeouts.
BULK_TIMEOUT_FACTOR = 10
#: A healthy backend no call has reached for this long is checked when readiness is asked (seconds).
QUIET_PROBE_EVERY = 30.0
#: While stale values are served, the warning is repeated at most this often (seconds) per instance.
STALE_LOG_EVERY = 30.0


class Source(Protocol):
    """What the cache reads through: a backend's store, or the Key Vault reference reader.

    A source that serves views (request metadata `objectType`, `format`) takes a third argument
    to `get` and a second to `bulk_get`; the cache passes them only for a view other than the
    default, so a source that knows of none need not accept them.

    A source may also say whether its backend is failing now, `failing() -> str | None` (the cause,
    known from the first failed attempt of any client sharing that backend, None once it answers):
    while it says so, reads past their TTL are answered from held values without waiting; and
    `watch_failure(future)`, which resolves the future at the next failed attempt, so a read
    already waiting for a refresh stops waiting then; and `probe_gate() -> ProbeGate`, the gate
    every reader of that backend shares, so that while it fails one refresh at a time asks it
    (`core.probes`), whichever instance starts it.

    A source may also offer change detection, `markers(names, max_pages)`: one listing of the
    backend that says, for each name, (when its latest version last changed, as epoch seconds, and
    a fingerprint that changes with it), leaving out names it does not hold, together with the
    pages it cost; or None when that would take more than `max_pages` pages.
    """

    @property
    def backend(self) -> str: ...

    async def get(self, name: str, version: str | None = None, view: View = DEFAULT_VIEW) -> dict[str, str]: ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...


@dataclass
class _Entry:
    data: dict[str, str] | None  # None: a remembered not-found
    expires_at: float
    refresh_at: float
    refusal: SecretStoreError | None = None  # negative entries: the decision (deleted, disabled ...)
    last_used: float = 0.0
    refreshing: bool = False
    refresh_started: float = -math.inf  # when its latest refresh was started (on the cache's clock)
    fetched_wall: float = 0.0  # wall clock when the value was read from the backend
    marker: str | None = None  # the listing fingerprint this value was last confirmed against


def _copy_of(err: SecretStoreError) -> SecretStoreError:
    """The same error, new: a remembered one keeps no traceback (and its frames) alive, and each
    reader raises its own."""
    return type(err)(err.message, cause=err.cause)


#: (name, version, view): each view of a secret (its PEM, a certificate's public part) is its own entry.
_Key = tuple[str, str | None, View]


class CachedStore:
    """A store behind a per-instance cache with single-flight, negative caching,
    stale-while-revalidate, stale-if-error, refresh-ahead, a concurrency bound and per-call timeouts.

    `peek` is the fast path and may be called from any thread (the gRPC
    workers); everything else runs on the event loop the instance was built on.

    The rule under faults (RFC 5861): a read that can be answered from a held value never waits
    on a failing backend. A read past its TTL with a value within maxStale starts (or joins) the
    one refresh of its key and waits for it at most `staleWait`, then gets the held value; while
    the backend is known to be failing (`Source.failing`, or the latest call here failed) it gets
    the held value at once. Only a read with nothing held waits for the backend; such reads of
    distinct keys are the backend work `work_limit` bounds (many readers of one key are one piece
    of work). A secret that was disabled, deleted or whose access was revoked is a decision
    (`core.errors.decides_about_secret`), surfaced at once, and its held value is dropped; any other
    failure (unavailable, too slow, throttled, the identity refused) is answered with the held value
    within maxStale.
    """

    def __init__(
        self, store: Source, metadata: ParsedMetadata, *, instance: str, work_limit: int | None = None
    ) -> None:
        self.store = store
        self.instance = instance
        self.backend = store.backend
        self.ttl: float = metadata["cacheTTL"]
        self.negative_ttl: float = metadata["negativeCacheTTL"]
        self.max_stale: float = metadata["maxStale"]
        self.stale_wait: float = metadata["staleWait"]
        #: The most distinct backend reads for keys with nothing held (and bulk reads) at once; past
        #: it a new one is refused with ResourceExhausted (None: no bound beyond maxConcurrentRequests).
        self.work_limit = work_limit
        self._backend_failing: Callable[[], str | None] | None = getattr(store, "failing", None)
        # While the backend fails, refreshes go through a gate one at a time (core/probes.py): the
        # backend's shared one once the store is open and has one, else this cache's own.
        self._shared_gate: Callable[[], ProbeGate | None] | None = getattr(store, "probe_gate", None)
        self._own_gate = ProbeGate(clock=lambda: self.clock())
        # Keys whose refresh a gate let through, until the loop starts it (claimed on any thread).
        self._probes: dict[_Key, ProbeGate] = {}
        # How long a request to the backend would wait for its turn now (a learned rate, a queue).
        self._queued: Callable[[], float] | None = getattr(store, "queued", None)
        self.max_entries: int = metadata["cacheMaxEntries"]
        self.change_detection = bool(metadata.get("changeDetection", True)) and hasattr(store, "markers")
        self.timeout: float = metadata["requestTimeout"]
        self._limit = asyncio.Semaphore(metadata["maxConcurrentRequests"])
        self._loop = asyncio.get_running_loop()
        # Injectable so tests can move time instead of sleeping through TTLs.
        self.clock: Callable[[], float] = time.monotonic
        self.wall: Callable[[], float] = time.time
        # Draws in [0, 1) for the jitter; tests set it to `lambda: 0.0` for exact TTLs.
        self.random: Callable[[], float] = random.random
        # Change detection: keys claimed for a refresh, waiting for the next sweep.
        self._due: set[_Key] = set()
        self._sweep: asyncio.Task[None] | None = None
        # The sweep started when a probe found the backend back (see `_recover`).
        self._recovery: asyncio.Task[None] | None = None
        # Pages the latest listing took (None: not listed yet); a lower bound after a capped try.
        self._list_pages: int | None = None
        self._entries: dict[_Key, _Entry] = {}
        self._inflight: dict[_Key, asyncio.Task[dict[str, str]]] = {}
        # Keys in `_inflight` whose read was started by a reader with nothing held (counted work).
        self._misses: set[_Key] = set()
        # Readers waiting for a refresh (staleWait): a failed call here ends their wait at once.
        self._watchers: set[asyncio.Future[str]] = set()
        self._bulk_inflight: dict[tuple[int | None, View], asyncio.Task[dict[str, dict[str, str]]]] = {}
        # (expires_at, the limit it answered, the names listed) of the latest BulkGet.
        self._bulk: dict[View, tuple[float, int | None, tuple[str, ...]]] = {}
        self._stale_since: float | None = None
        self._stale_logged_at = -math.inf
        # The failure of the latest backend call while the backend is failing; None once it answers.
        self._outage: SecretStoreError | None = None
        # The cause of the latest backend failure, for /readyz; None once the backend answered.
        self.last_error: str | None = "not checked yet"
        # For readiness: when the backend last answered (None: never), when it started failing.
        self.last_ok_at: float | None = None
        self.down_since: float | None = None
        # The latest expiry of any value held: past it plus maxStale, nothing is left to serve.
        self._newest_expiry = -math.inf
        self._probe: asyncio.Task[None] | None = None
        self._probed_at = -math.inf
        self._hits = CACHE_LOOKUPS.labels(instance, "hit")

    # ---- the fast path, any thread -------------------------------------------------

    def peek(self, name: str, version: str | None = None, view: View = DEFAULT_VIEW) -> dict[str, str] | None:
        """A fresh value without awaiting anything, or None (then call `get`)."""
        key = (name, version, view)
        entry = self._entries.get(key)
        if entry is None or entry.data is None:
            return None
        now = self.clock()
        if now >= entry.expires_at:
            if not self._stale_now(entry, now):
                return None
            if self._claim_refresh(key, entry, now):
                self._loop.call_soon_threadsafe(self._refresh_ahead, key)
            return self._stale_hit(name, entry, now)
        entry.last_used = now
        if self._claim_refresh(key, entry, now):
            self._loop.call_soon_threadsafe(self._refresh_ahead, key)
        self._hits.inc()
        return entry.data

    def failing(self) -> str | None:
        """Why the backend is failing now (any thread), or None: this cache's latest call failed, or
        the source knows it from the first failed attempt of any client sharing the backend."""
        if self._outage is not None:
            return self._outage.message
        return self._backend_failing() if self._backend_failing is not None else None

    def _servable(self, entry: _Entry, now: float) -> bool:
        """Whether an expired entry still holds a value maxStale allows serving."""
        return entry.data is not None and now - entry.expires_at <= self.max_stale

    def _stale_now(self, entry: _Entry, now: float) -> bool:
        """Whether an expired entry is answered at once: the backend is failing and maxStale allows it.

        Without this, every expired key would wait for a failing backend (staleWait, or the
        whole call for reads racing the first failure) before getting the same stale value,
        holding a gRPC worker all the while. One background refresh per key finds out when the
        backend is back.
        """
        return self._servable(entry, now) and (self.failing() is not None or self._slow() or self._recovering())

    def _slow(self) -> bool:
        """Whether a refresh asked for now would wait at least staleWait for its turn at the backend
        (a vault paced to its learned rate): its answer cannot come within the bound, so readers get
        the held value at once while it is made."""
        return self._queued is not None and self._queued() >= self.stale_wait

    def _claim_refresh(self, key: _Key, entry: _Entry, now: float) -> bool:
        """True for the one reader that should start a background refresh of this entry now.

        While the backend is failing, only a refresh the probe gate lets through (one at a time
        for the backend, see core/probes.py); the other due entries stay due, and are refreshed
        by the reads that come once a probe has found the backend answering again.
        """
        if now < entry.refresh_at or entry.refreshing:
            return False
        if self.failing() is not None:
            gate = (self._shared_gate() if self._shared_gate is not None else None) or self._own_gate
            if not gate.claim():
                return False
            # Keyed by the key, not the entry: a new entry (or none) by the time the loop starts the
            # probe must not keep the gate closed for good.
            self._probes[key] = gate
        entry.refreshing = True
        return True

    # ---- reads, on the loop -------------------------------------------------------------

    async def get(self, name: str, version: str | None = None, view: View = DEFAULT_VIEW) -> dict[str, str]:
        key = (name, version, view)
        entry = self._entries.get(key)
        now = self.clock()
        if entry is not None and now < entry.expires_at:
            entry.last_used = now
            if entry.data is None:
                CACHE_LOOKUPS.labels(self.instance, "negative").inc()
                assert entry.refusal is not None
                raise _copy_of(entry.refusal)
            if self._claim_refresh(key, entry, now):
                self._refresh_ahead(key)
            self._hits.inc()
            return entry.data
        if entry is not None and self._servable(entry, now):
            return await self._revalidate_or_stale(key, entry, now)
        CACHE_LOOKUPS.labels(self.instance, "miss").inc()
        task = self._inflight.get(key)
        if task is None:
            self._admit_work()
            # Its requests go before refreshes of held values wherever the backend's requests queue.
            waited_on = WAITED_ON.set(True)
            try:
                task = self._start(key)
            finally:
                WAITED_ON.reset(waited_on)
            self._misses.add(key)
            task.add_done_callback(lambda _t: self._misses.discard(key))
        # shield: one caller giving up must not cancel the read the others wait on.
        return await asyncio.shield(task)

    async def _revalidate_or_stale(self, key: _Key, entry: _Entry, now: float) -> dict[str, str]:
        """A read past its TTL with a value held (stale-while-revalidate): the held value at once
        while the backend is failing, else the refresh's answer if it comes within staleWait, else
        the held value. A refresh that finds the secret deleted or disabled drops the entry and its
        answer (the error) is what the reader gets."""
        name = key[0]
        if self.failing() is not None or self.stale_wait <= 0 or self._slow() or self._recovering():
            if self._claim_refresh(key, entry, now):
                self._refresh_ahead(key)
            return self._stale_hit(name, entry, now)
        task = self._inflight.get(key)
        if task is None:
            entry.refreshing = True
            task = self._refresh_one(key)
        # The bound runs from the refresh's start: a reader joining one that has been out longer
        # than staleWait already knows it is slow, and gets the held value at once.
        bound = self.stale_wait - (now - entry.refresh_started)
        if bound > 0 and await self._briefly(task, bound):
            return task.result()  # the fresh value; or the decision (deleted, disabled) it met
        held = self._entries.get(key)
        if held is None or held.data is None:  # dropped meanwhile (deleted, disabled): ask again
            return await self.get(*key)
        now = self.clock()
        if now < held.expires_at:  # answered just as the bound ran out
            return held.data
        return self._stale_hit(name, held, now)

    async def _briefly(self, task: asyncio.Future[Any], bound: float) -> bool:
        """Wait for a refresh for `bound` seconds at most (at most staleWait), and no longer than until an
        attempt fails (here or, through `Source.watch_failure`, anywhere the backend is shared); True if
        it is done."""
        failure: asyncio.Future[str] = self._loop.create_future()
        self._watchers.add(failure)
        watch = getattr(self.store, "watch_failure", None)
        if watch is not None:
            watch(failure)
        try:
            await asyncio.wait((task, failure), timeout=bound, return_when=asyncio.FIRST_COMPLETED)
        finally:
            failure.cancel()
            self._watchers.discard(failure)
        return task.done()

    def work_in_flight(self) -> int:
        """Backend reads out now for keys nothing was held for, and bulk reads (what `work_limit` bounds)."""
        return len(self._misses) + len(self._bulk_inflight)

    def _admit_work(self) -> None:
        """Refuse a new backend read for a key with nothing held when `work_limit` are already out."""
        if self.work_limit is None:
            return
        out = self.work_in_flight()
        if out >= self.work_limit:
            raise ResourceExhausted(
                f"the {self.backend} backend is saturated: {out} reads of distinct secrets with no value held "
                f"are already waiting on it, this instance's share of the server's workers; retry once some "
                "have finished (reads of secrets already held are still answered)"
            )

    def _start(self, key: _Key) -> asyncio.Task[dict[str, str]]:
        task = self._loop.create_task(self._load(key))
        self._inflight[key] = task
        task.add_done_callback(lambda t: (self._inflight.pop(key, None), t.cancelled() or t.exception()))
        return task

    def _refresh_ahead(self, key: _Key) -> None:
        entry = self._entries.get(key)
        gate = self._probes.pop(key, None)
        if gate is not None:
            if entry is None:  # evicted since: no probe after all
                gate.done()
                return
            # A probe reads this one key (not a listing, which would cost more than one request),
            # and frees the gate when it ends, however it ends.

            def probed(task: asyncio.Task[dict[str, str]]) -> None:
                gate.done()
                if not task.cancelled() and task.exception() is None and self._entries.get(key) is not entry:
                    self._recover()

            self._refresh_one(key).add_done_callback(probed)
            return
        if key in self._inflight:
            return
        if self.change_detection and self._listed(key):
            # Many hot keys come due together: one listing may tell which of them changed.
            self._due.add(key)
            if self._sweep is None or self._sweep.done():
                self._sweep = self._loop.create_task(self._revalidate())
            return
        self._refresh_one(key)

    def _recover(self) -> None:
        """A probe found the backend answering again: every held key went stale during the outage.
        One sweep revalidates them (a listing, then reads of the changed ones only) instead of a read
        per key, and until it ends a read past its TTL is answered from the value held, at once: it
        has been stale for the whole outage, and the sweep finds a change within its listing."""
        if not self.change_detection:
            return
        if self._sweep is None or self._sweep.done():
            self._sweep = self._loop.create_task(self._revalidate())
        self._recovery = self._sweep

    def _recovering(self) -> bool:
        """Whether the sweep after an outage is still out (any thread)."""
        recovery = self._recovery
        return recovery is not None and not recovery.done()

    def _refresh_one(self, key: _Key) -> asyncio.Task[dict[str, str]]:
        task = self._inflight.get(key)
        if task is not None:
            return task

        before = self._entries.get(key)
        if before is not None:
            before.refresh_started = self.clock()

        def done(task: asyncio.Task[dict[str, str]]) -> None:
            entry = self._entries.get(key)
            # Answered with the held value (stale-if-error) is a failed refresh too: the entry
            # is the same one, not a new reading.
            failed = task.cancelled() or task.exception() is not None or (entry is not None and entry is before)
            REFRESHES.labels(self.instance, "error" if failed else "ok").inc()
            if failed and entry is not None:
                # Try again a little later rather than on every read.
                entry.refreshing = False
                entry.refresh_at = self.clock() + self._retry_delay()

        task = self._start(key)
        task.add_done_callback(done)
        return task

    @staticmethod
    def _listed(key: _Key) -> bool:
        """Whether a listing of secrets can tell if this entry changed: the latest version of a
        secret (a certificate's or key's public part is not in the secrets' listing)."""
        return key[1] is None and key[2].object_type == SECRET

    async def _load(self, key: _Key) -> dict[str, str]:
        name, version, view = key
        read = self.store.get(name, version) if view == DEFAULT_VIEW else self.store.get(name, version, view)
        try:
            data = await self._call("get", read, self.timeout)
        except SecretStoreError as err:
            if decides_about_secret(err):
                # Deleted, disabled, expired, access revoked: the backend decided; the old value is not
                # served again, and the decision is remembered for negativeCacheTTL, so an app that
                # keeps asking for that secret cannot hammer the backend.
                self._entries.pop(key, None)
                if self.negative_ttl > 0 and self.ttl > 0:
                    self._put(key, _Entry(None, self.clock() + self.negative_ttl, math.inf, refusal=_copy_of(err)))
                raise
            # Unreachable, slow, throttled, or the identity refused: nothing was said about the secret.
            stale = self._entries.get(key)
            if stale is not None and stale.data is not None:
                return self._serve_stale(name, stale, err)
            raise
        self._fresh_again()
        self._remember(key, data)
        return data

    def _serve_stale(self, name: str, entry: _Entry, err: SecretStoreError) -> dict[str, str]:
        now = self.clock()
        past_ttl = now - entry.expires_at if entry.expires_at <= now else 0.0
        if entry.data is None or past_ttl > self.max_stale:
            raise Unavailable(
                f"{err.message}; the last good value of {show_name(name)} is past maxStale "
                f"({format_duration(self.max_stale)})"
            ) from err
        return self._stale_hit(name, entry, now)

    def _stale_hit(self, name: str, entry: _Entry, now: float) -> dict[str, str]:
        """Count and report a stale answer (any thread); the warning at most every STALE_LOG_EVERY."""
        past_ttl = max(now - entry.expires_at, 0.0)
        STALE_SERVED.labels(self.instance, self.backend).inc()
        STALE_AGE.labels(self.instance, self.backend).set(past_ttl)
        CACHE_LOOKUPS.labels(self.instance, "stale").inc()
        if self._stale_since is None:
            self._stale_since = now
        if now - self._stale_logged_at >= STALE_LOG_EVERY:
            self._stale_logged_at = now
            waited = format_duration(self.stale_wait)
            cause = self.failing() or f"the refresh did not answer within staleWait ({waited})"
            log.warning(
                "backend failing; serving a stale value",
                extra={
                    "instance": self.instance,
                    "backend": self.backend,
                    "secret": name,
                    "stale_seconds": round(past_ttl, 3),
                    "stale_for_seconds": round(now - self._stale_since, 3),
                    "cause": cause,
                },
            )
        assert entry.data is not None
        return entry.data

    def _fresh_again(self) -> None:
        self.last_error = None
        self._outage = None
        self.last_ok_at = self.clock()
        self.down_since = None
        BACKEND_UP.labels(self.instance, self.backend).set(1)
        if self._stale_since is not None:
            self._stale_since = None
            STALE_AGE.labels(self.instance, self.backend).set(0)
            log.info("backend answering again", extra={"instance": self.instance, "backend": self.backend})

    def _deadlines(self, now: float) -> tuple[float, float]:
        """(expires_at, refresh_at) for a latest-version value read or confirmed `now`, jittered."""
        ttl = self.ttl * (1 - TTL_JITTER * self.random())
        return now + ttl, now + ttl * (REFRESH_AHEAD_AT - REFRESH_JITTER * self.random())

    def _remember(self, key: _Key, data: dict[str, str]) -> None:
        if self.ttl <= 0:
            return
        now = self.clock()
        if key[1] is not None:
            self._put(key, _Entry(data, now + max(self.ttl, VERSIONED_TTL), math.inf, last_used=now))
        else:
            expires_at, refresh_at = self._deadlines(now)
            self._put(key, _Entry(data, expires_at, refresh_at, last_used=now, fetched_wall=self.wall()))

    # ---- change detection, on the loop ----------------------------------------------------------

    async def _revalidate(self) -> None:
        """Revalidate the keys due for a refresh: by one listing when that costs fewer requests
        than reading each of them, re-reading only those whose marker changed; else one by one."""
        await asyncio.sleep(0)  # let the other keys claimed in this burst join
        now = self.clock()
        # Every other hot key that would come due soon rides on the same listing.
        horizon = now + self.ttl * (1 - REFRESH_AHEAD_AT + REFRESH_JITTER)
        for key, entry in self._entries.items():
            if (self._listed(key) and entry.data is not None and not entry.refreshing and entry.refresh_at <= horizon
                    and entry.last_used > entry.expires_at - self.ttl):
                entry.refreshing = True
                self._due.add(key)
        due, self._due = self._due, set()
        due = {key for key in due if key not in self._inflight and key in self._entries}
        known = self._list_pages
        worth_listing = len(due) > 1 and (len(due) >= LIST_PAGE if known is None else known < len(due))
        markers_of = getattr(self.store, "markers", None)
        if not worth_listing or markers_of is None:
            for key in due:
                self._refresh_one(key)
            return
        try:
            found = await self._call(
                "list_changes", markers_of(list({key[0] for key in due}), len(due) - 1),
                self.timeout * BULK_TIMEOUT_FACTOR
            )
        except SecretStoreError:
            if self.failing() is not None:
                # The backend is failing: asking it for each key now would be the storm the probe
                # gate exists to avoid. They stay due; reads probe it, one at a time.
                self._give_back(due)
                return
            found = None  # e.g. no permission to list: the reads one by one meet the backend and decide
        else:
            if found is None:
                self._list_pages = len(due)  # the listing is longer than that: not again at this size
        if found is None:
            for key in due:
                self._refresh_one(key)
            return
        markers, self._list_pages = found
        self._fresh_again()
        # One draw for the whole batch: its keys stay together for the next listing, while
        # replicas (each drawing its own) stay apart.
        expires_at, refresh_at = self._deadlines(self.clock())
        confirmed = 0
        for key in due:
            held = self._entries.get(key)
            if held is None or held.data is None:
                continue
            entry = held
            listed = markers.get(key[0])
            if listed is not None:
                updated, fingerprint = listed
                if entry.marker == fingerprint or (
                    entry.marker is None and updated + MARKER_SETTLE < entry.fetched_wall
                ):
                    entry.marker = fingerprint
                    entry.expires_at, entry.refresh_at = expires_at, refresh_at
                    entry.refreshing = False
                    confirmed += 1
                    continue
            self._refresh_one(key)  # changed, gone, or too recent to tell: read it
        REFRESHES.labels(self.instance, "unchanged").inc(confirmed)

    def _give_back(self, keys: set[_Key]) -> None:
        """Keys claimed for a refresh that was not made: due again a little later, not on every read."""
        retry_at = self.clock() + self._retry_delay()
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and key not in self._inflight:
                entry.refreshing = False
                entry.refresh_at = max(entry.refresh_at, retry_at)

    def _retry_delay(self) -> float:
        """How long after a failed refresh its key is tried again (seconds)."""
        return min(max(self.ttl / 10, 0.1), 5.0)

    def _put(self, key: _Key, entry: _Entry) -> None:
        self._entries[key] = entry
        if entry.data is not None and entry.expires_at > self._newest_expiry:
            self._newest_expiry = entry.expires_at
        if len(self._entries) > self.max_entries:
            # Evict the least recently used tenth in one go, not one per insert.
            doomed = sorted(self._entries.items(), key=lambda kv: kv[1].last_used)
            for old_key, _ in doomed[: max(1, self.max_entries // 10)]:
                self._entries.pop(old_key, None)
        CACHE_ENTRIES.labels(self.instance).set(len(self._entries))

    def _down(self, cause: str) -> None:
        """The backend failed: readiness and `secretbridge_backend_up` say so, with the cause; readers
        waiting for a refresh are answered from held values now."""
        for watcher in list(self._watchers):
            if not watcher.done():
                watcher.set_result(cause)
        self.last_error = cause
        if self.down_since is None:
            self.down_since = self.clock()
        BACKEND_UP.labels(self.instance, self.backend).set(0)

    def can_serve(self, now: float) -> bool:
        """Whether some read can be answered now: the backend answers, or a value is within maxStale.

        After evictions this may err towards True (one value short of the truth), never towards False.
        """
        if self.last_error is None:
            return True
        return now < self.stale_until()

    def stale_until(self) -> float:
        """Until when (on `clock`) some value held can still be served stale."""
        return self._newest_expiry + self.max_stale

    async def _call(
        self, operation: str, call: Coroutine[Any, Any, T], timeout: float, bound: str = "requestTimeout"
    ) -> T:
        """One backend call: under the concurrency bound, within the timeout, counted."""
        started = time.monotonic()
        outcome = "error"
        try:
            async with asyncio.timeout(timeout):
                async with self._limit:
                    result = await call
            outcome = "ok"
            return result
        except TimeoutError:
            outcome = "timeout"
            self._outage = DeadlineExceeded(
                f"the {self.backend} backend did not answer within {format_duration(timeout)} ({bound})"
            )
            self._down(f"no answer within {format_duration(timeout)}")
            raise self._outage from None
        except NotFound:
            outcome = "not_found"
            raise
        except Unavailable as err:
            # One disabled or forbidden secret says nothing of the backend's health; this does.
            self._outage = err
            self._down(err.message)
            raise
        finally:
            # Cancelled (or timed out) before its turn under the bound: never started, never awaited.
            call.close()
            BACKEND_CALLS.labels(self.instance, self.backend, operation, outcome).inc()
            BACKEND_SECONDS.labels(self.backend, operation).observe(time.monotonic() - started)

    async def bulk_get(self, limit: int | None = None, view: View = DEFAULT_VIEW) -> dict[str, dict[str, str]]:
        """Every secret; cached for the TTL (per view), and each one primes the Get cache.

        As for Get: past the TTL, with every listed secret still held within maxStale, the refresh
        is waited for staleWait at most (not at all while the backend is failing), then the held
        listing answers. A refresh that fails answers from held values, secret by secret.
        """
        now = self.clock()
        fresh = self._listing(limit, view, now, stale=False)
        if fresh is not None:
            return {name: entry.data for name, entry in fresh.items()}  # type: ignore[misc]
        stale = self._listing(limit, view, now, stale=True)
        if stale is not None and (self.failing() is not None or self.stale_wait <= 0 or self._slow()):
            # A failing backend is not waited out, nor asked for every secret again: a probe (one
            # cheap request, every few seconds at most) finds out when it is back.
            self.probe_soon()
            return self._stale_listing(stale, now)
        task = self._bulk_inflight.get((limit, view))
        if task is None:
            if stale is None:
                self._admit_work()  # nothing to answer with meanwhile: this is backend work callers wait on
            task = self._start_bulk(limit, view)
        if stale is None:
            return await asyncio.shield(task)
        if await self._briefly(task, self.stale_wait):
            return task.result()
        now = self.clock()
        stale = self._listing(limit, view, now, stale=True)
        if stale is None:  # some of it dropped meanwhile (deleted, evicted): wait for the answer
            return await asyncio.shield(task)
        return self._stale_listing(stale, now)

    def _start_bulk(self, limit: int | None, view: View) -> asyncio.Task[dict[str, dict[str, str]]]:
        asked = (limit, view)
        task = self._loop.create_task(self._load_bulk(limit, view))
        self._bulk_inflight[asked] = task
        task.add_done_callback(lambda t: (self._bulk_inflight.pop(asked, None), t.cancelled() or t.exception()))
        return task

    def _held_entry(self, name: str, view: View, now: float) -> _Entry | None:
        """The latest-version entry of `name` in `view` if it holds a value within maxStale."""
        entry = self._entries.get((name, None, view))
        if entry is None or entry.data is None or now - entry.expires_at > self.max_stale:
            return None
        return entry

    def _held_value(self, name: str, view: View = DEFAULT_VIEW) -> dict[str, str] | None:
        """The value held for `name` within maxStale (counted as stale), or None: BulkGet's fallback."""
        now = self.clock()
        entry = self._held_entry(name, view, now)
        if entry is None:
            return None
        return self._stale_hit(name, entry, now) if now >= entry.expires_at else entry.data

    def _bulk_failure(self, err: SecretStoreError, limit: int | None, view: View, now: float) -> SecretStoreError:
        """The error of a BulkGet that failed with nothing complete to answer: how many secrets lack a value."""
        if "BulkGet" in err.message and "no value is held" in err.message:
            return err  # the backend already counted them
        latest = self._bulk.get(view)
        if latest is None or (latest[1] is not None and latest[1] != limit):
            return type(err)(f"{err.message}; no BulkGet has been answered yet, so no listing is held to answer from")
        names = latest[2] if limit is None else latest[2][:limit]
        missing = sum(1 for name in names if self._held_entry(name, view, now) is None)
        return type(err)(
            f"{err.message}; no value is held within maxStale ({format_duration(self.max_stale)}) for {missing} "
            f"of the {len(names)} secrets listed last"
        )

    def _listing(self, limit: int | None, view: View, now: float, *, stale: bool) -> dict[str, _Entry] | None:
        """The latest BulkGet's entries for this `limit` and `view`: fresh ones, or (stale) ones within maxStale."""
        latest = self._bulk.get(view)
        if latest is None:
            return None
        expires_at, cached_limit, names = latest
        if cached_limit is not None and cached_limit != limit:
            return None
        chosen = names if limit is None else names[:limit]
        entries = {n: self._entries.get((n, None, view)) for n in chosen}
        for entry in entries.values():
            if entry is None or entry.data is None:
                return None
            if now >= entry.expires_at and (not stale or now - entry.expires_at > self.max_stale):
                return None
        if not stale and now >= expires_at:
            return None
        return entries  # type: ignore[return-value]

    def _stale_listing(self, entries: dict[str, _Entry], now: float) -> dict[str, dict[str, str]]:
        return {
            name: self._stale_hit(name, entry, now) if now >= entry.expires_at else entry.data  # type: ignore[misc]
            for name, entry in entries.items()
        }

    async def _load_bulk(self, limit: int | None, view: View) -> dict[str, dict[str, str]]:
        timeout = self.timeout * BULK_TIMEOUT_FACTOR
        try:
            bulk_get = getattr(self.store, "bulk_get", None)
            if bulk_get is None:
                raise FailedPrecondition(f"the {self.backend} reads behind this cache cannot list secrets")
            args: tuple[Any, ...] = (limit,) if view == DEFAULT_VIEW else (limit, view)
            if getattr(self.store, "bulk_fallback", False) and self.ttl > 0:
                # Secrets the backend lists but cannot read now are answered from held values.
                call = bulk_get(*args, fallback=functools.partial(self._held_value, view=view))
            else:
                call = bulk_get(*args)
            every = await self._call("bulk_get", call, timeout)
        except (Unavailable, DeadlineExceeded) as err:
            now = self.clock()
            stale = self._listing(limit, view, now, stale=True) if self.ttl > 0 else None
            if stale is not None:
                return self._stale_listing(stale, now)
            raise self._bulk_failure(err, limit, view, now) from None
        self._fresh_again()
        for name, data in every.items():
            self._remember((name, None, view), data)
        if self.ttl > 0:
            now = self.clock()
            self._bulk[view] = (self._deadlines(now)[0], limit, tuple(every))
        return every

    # ---- warm restart ----------------------------------------------------------------------

    def held_names(self, limit: int) -> list[str]:
        """Names (never values) of the latest-version, default-view secrets held, most recently used
        first, at most `limit`: what a restarted secretbridge reads again (runtime/state.py keeps them)."""
        held = [(entry.last_used, key[0]) for key, entry in self._entries.items()
                if key[1] is None and key[2] == DEFAULT_VIEW and entry.data is not None]
        held.sort(reverse=True)
        return [name for _, name in held[:limit]]

    async def warm(self, names: list[str], concurrency: int) -> tuple[int, int]:
        """Read `names` into the cache in the background, at most `concurrency` at once, each through
        `get` (single-flight with app reads, the same budget and bounds); (read, failed)."""
        gate = asyncio.Semaphore(max(1, concurrency))
        failed = 0

        async def one(name: str) -> None:
            nonlocal failed
            async with gate:
                try:
                    await self.get(name)
                except NotFound:
                    pass  # deleted since: nothing to serve, and the negative entry is right
                except SecretStoreError:
                    failed += 1

        await asyncio.gather(*(one(name) for name in names))
        return len(names) - failed, failed

    async def check(self, timeout: float | None = None, bound: str = "requestTimeout") -> None:
        """Reach the backend now (failFast, readiness), within `timeout` (requestTimeout by default)."""
        try:
            await self._call("check", self.store.check(), self.timeout if timeout is None else timeout, bound)
        except SecretStoreError as err:
            self._down(err.message)
            raise
        self._fresh_again()

    def probe_soon(self, every: float = 5.0) -> None:
        """Check the backend in the background, at most once per `every` seconds (any thread).

        Readiness must recover when a backend comes back even if no app reads in
        the meantime, and must never make `/readyz` wait on the backend.
        """

        def start() -> None:
            now = self.clock()
            if (self._probe is not None and not self._probe.done()) or now - self._probed_at < every:
                return
            self._probed_at = now
            self._probe = self._loop.create_task(self._probe_once())

        self._loop.call_soon_threadsafe(start)

    def keep_watch(self) -> None:
        """Called by readiness: probe a failing backend (every 5 s at most), and a healthy one no
        call has reached for QUIET_PROBE_EVERY, so `secretbridge_backend_up` follows an outage
        even while every read is a cache hit."""
        if self.last_error is not None:
            self.probe_soon()
        elif self.last_ok_at is not None and self.clock() - self.last_ok_at >= QUIET_PROBE_EVERY:
            self.probe_soon(QUIET_PROBE_EVERY)

    async def _probe_once(self) -> None:
        try:
            await self.check()
        except SecretStoreError as err:
            log.warning(
                "backend not reachable",
                extra={"instance": self.instance, "backend": self.backend, "cause": err.message},
            )

    async def close(self) -> None:
        probe = [self._probe] if self._probe is not None else []
        if self._sweep is not None:
            probe.append(self._sweep)
        for task in [*self._inflight.values(), *self._bulk_inflight.values(), *probe]:
            task.cancel()
        self._entries.clear()
        self._newest_expiry = -math.inf
        CACHE_ENTRIES.labels(self.instance).set(0)
