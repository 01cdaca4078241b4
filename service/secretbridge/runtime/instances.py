"""Per-instance state, keyed by the `x-component-instance` gRPC metadata.

daprd opens one connection per Component and names it in every call; several
Components may share this one socket, each with its own backend. `Init` builds
an `Instance` from the Component's metadata; a later `Init` for the same name
(daprd's hot reload) replaces it and closes the old one; a failed `Init` leaves
nothing behind, so an instance whose Init failed serves nothing.

daprd never sends Init again after secretbridge restarts, so each Init's metadata
is kept (`runtime/state.py`) and the instances are opened again at start. At most
`max_instances` exist at once: daprd never says when a Component is gone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from secretbridge import backends as stores
from secretbridge.backends.contract import MULTIPLE_KEY_VALUES_PER_SECRET, SecretStore
from secretbridge.core.errors import DeadlineExceeded, FailedPrecondition, PermissionDenied, SecretStoreError
from secretbridge.core.metadata import ParsedMetadata, format_duration
from secretbridge.core.names import (
    DEFAULT_VIEW,
    BulkOptions,
    GetOptions,
    View,
    bulk_options,
    check_name,
    get_options,
    show_name,
)
from secretbridge.core.policy import STRICT, OperatorPolicy
from secretbridge.runtime.cache import CachedStore
from secretbridge.runtime.metrics import BACKEND_UP, notice_counter
from secretbridge.runtime.state import MAX_NAMES, Saved, StateStore

log = logging.getLogger(__name__)

#: A Get without request metadata: the latest version, as the instance serves it.
_PLAIN = GetOptions()
#: The instance used when a call carries no `x-component-instance` header.
DEFAULT_INSTANCE = ""
#: How long a replaced instance stays open for the calls already using it (daprd's hot reload).
RETIRE_GRACE = 10.0
#: Local stores have no requestTimeout; this bounds a call on a stuck filesystem.
LOCAL_TIMEOUT = 30.0
#: daprd gives dial + Init + Features 5 s; failFast's backend check gets this much of it, whatever
#: requestTimeout says, so that Init answers "unreachable" in time instead of daprd's "init timeout".
FAIL_FAST_BUDGET = 3.0
#: `--max-instances` by default: daprd sends no Close, so instances of removed Components linger.
DEFAULT_MAX_INSTANCES = 256
#: How long a call waits for its instance to be opened again after a restart.
RECOVERY_WAIT = 10.0
#: A remote instance's held names are written at most this often (seconds), and only when they
#: changed: a restart loses at most the names first read in the last 10 s, while a busy cache costs
#: one small file write per 10 s at most, off the read path.
NAMES_EVERY = 10.0
#: How often the names writer looks for a change: an instance's first names are kept within a second.
NAMES_TICK = 1.0
#: Reads of kept names at once after a restart, per instance: few, so that app reads of names never
#: held keep most of the instance's share of workers and of the vault's budget.
WARM_CONCURRENCY = 4


def label(instance: str) -> str:
    """How messages name an instance."""
    return f"instance '{instance}'" if instance != DEFAULT_INSTANCE else "the default instance"


@dataclass
class Instance:
    """One initialised Component: its store, wrapped in the cache when remote."""

    name: str
    backend: str
    store: SecretStore
    cached: CachedStore | None
    resolver: CachedStore | None
    allowed: frozenset[str]
    denied: frozenset[str]
    #: When this instance was built (Init or recovery), and last called, on `Instances.clock`.
    started_at: float = 0.0
    last_called: float = 0.0
    #: Opened again from its saved metadata after secretbridge restarted, not by an Init.
    recovered: bool = False
    #: The held names last kept on disk, by cache (None: none kept for this instance yet), and when (clock).
    names_kept: dict[str, tuple[str, ...]] | None = None
    names_kept_at: float = -math.inf
    #: Reading again the names kept before a restart; until done, the names on disk are not rewritten.
    warming: bool = False
    warm_task: asyncio.Task[None] | None = None
    #: The server's serialized Get answers, by request bytes (`server.Reply`). An answer is reused
    #: only while the store holds the very dict it was built from (see `SecretStoreServicer.Get`).
    replies: dict[bytes, Any] = field(default_factory=dict, repr=False)

    @property
    def multi_valued(self) -> bool:
        return self.store.multi_valued

    @property
    def supports_versions(self) -> bool:
        return self.store.supports_versions

    def features(self) -> list[str]:
        """What `Features` advertises: only multi-valued instances say so."""
        return [MULTIPLE_KEY_VALUES_PER_SECRET] if self.multi_valued else []

    @property
    def call_timeout(self) -> float:
        """The outer bound on one call handed to the I/O loop; the cache enforces requestTimeout itself."""
        return self.cached.timeout * 10 + 5 if self.cached is not None else LOCAL_TIMEOUT

    def check_get(self, name: str, metadata: Mapping[str, str]) -> GetOptions:
        """Everything a Get must pass before any store sees it; returns what the request asks for."""
        check_name(name)
        # daprd usually sends no request metadata: then there are no options to read.
        options = get_options(
            metadata, supports_versions=self.supports_versions, backend=self.backend,
            object_types=self.store.object_types, certificates=self.store.serves_certificates,
        ) if metadata else _PLAIN
        self.permit(name)
        return options

    def bulk_options(self, metadata: Mapping[str, str]) -> BulkOptions:
        """What a BulkGet's request metadata asks for (`maxresults`, `format`), checked."""
        return bulk_options(metadata, certificates=self.store.serves_certificates, backend=self.backend)

    def permit(self, name: str) -> None:
        """Refuse a name the Component's allow or deny list rules out."""
        if name in self.denied:
            raise PermissionDenied(f"secret {show_name(name)} is listed in deniedSecrets")
        if self.allowed and name not in self.allowed:
            raise PermissionDenied(f"secret {show_name(name)} is not listed in allowedSecrets")

    def _permitted(self, name: str) -> bool:
        return name not in self.denied and (not self.allowed or name in self.allowed)

    def peek(self, name: str, options: GetOptions | None = None) -> dict[str, str] | None:
        """An answer from memory, on the calling thread, without touching the loop; else None.

        Remote stores answer from the cache; local ones from their `read_now` (which may raise
        the store's errors, e.g. NotFound).
        """
        options = options or _PLAIN
        if self.cached is not None:
            return self.cached.peek(name, options.version, options.view)
        return self.store.read_now(name, options.version, options.view)

    async def get(self, name: str, options: GetOptions | None = None) -> dict[str, str]:
        """One secret as `options` (from `check_get`; None: the latest, as the instance serves it) asks."""
        options = options or _PLAIN
        reader = self.cached or self.store
        return await reader.get(name, options.version, options.view)

    async def bulk_get(self, limit: int | None, view: View = DEFAULT_VIEW) -> dict[str, dict[str, str]]:
        reader = self.cached or self.store
        if not self.allowed and not self.denied:
            return await reader.bulk_get(limit, view)
        # Filtering may drop names, so ask for everything and cut afterwards.
        every = await reader.bulk_get(None, view)
        kept = {name: data for name, data in every.items() if self._permitted(name)}
        if limit is not None:
            kept = dict(list(kept.items())[:limit])
        return kept

    def health(self, now: float, *, grace: float, idle_after: float) -> Health:
        """Whether this instance can serve now, and whether that holds the pod's readiness back.

        An instance that cannot serve (its backend fails and no cached value is within
        maxStale, or it never reached its backend) holds readiness back for `grace` from
        the moment it could not serve; past that the outage is one readiness cannot route
        around, and taking the pod out of service would only stop what still works. An
        instance not called for `idle_after` is one daprd may have forgotten: it never counts.
        """
        remote = self.cached if self.cached is not None else self.resolver
        contacted = remote is not None and (remote.last_ok_at is not None or remote.down_since is not None)
        backend_up = remote.last_error is None if remote is not None and contacted else None
        idle = now - self.last_called >= idle_after
        cached = self.cached
        if cached is None or cached.last_error is None:
            cause = ""
            if remote is not None and remote.last_error is not None and remote.down_since is not None:
                cause = f"Key Vault references: {remote.last_error}"
            return Health("ready", True, not idle, idle, cause, backend_up)
        if cached.can_serve(now):
            return Health("serving stale", True, not idle, idle, cached.last_error, backend_up)
        state, cause = "backend down", cached.last_error
        if cached.down_since is None:
            state, cause = "starting", "the backend has not answered yet"
        # Never reached: since it was built. Reached once: since the backend failed and nothing held was servable.
        since = self.started_at if cached.last_ok_at is None else max(cached.down_since or now, cached.stale_until())
        counted = not idle and now - since < grace
        return Health(state, False, counted, idle, cause, backend_up)

    def warm_caches(self) -> dict[str, CachedStore]:
        """The caches a restart reads again, by what they are keyed by (runtime/state.py's NAME_KINDS):
        a remote store's secrets, and the Key Vault references a store resolves."""
        return {kind: cache for kind, cache in (("names", self.cached), ("references", self.resolver))
                if cache is not None}

    async def close(self) -> None:
        if self.warm_task is not None:
            self.warm_task.cancel()  # a replaced instance reads nothing more into a cache about to close
        try:
            if self.cached is not None:
                await self.cached.close()
            await self.store.close()
            if self.resolver is not None:
                await self.resolver.close()
                await self.resolver.store.close()
        except Exception:
            log.exception("closing a store failed", extra={"instance": self.name, "backend": self.backend})


@dataclass(frozen=True)
class Health:
    """One instance's part in `/readyz`; `cause` names why (never a value), for people and `doctor`."""

    #: ready | serving stale | starting | backend down
    state: str
    can_serve: bool
    #: Whether this instance's `can_serve` decides the pod's readiness now (see `Instance.health`).
    counted: bool
    idle: bool
    cause: str
    #: The latest backend contact succeeded (None: not contacted yet, or no backend to contact).
    backend_up: bool | None

    @property
    def holds_back(self) -> bool:
        return self.counted and not self.can_serve


async def build_instance(
    name: str, raw: Mapping[str, str], policy: OperatorPolicy = STRICT, *, recovering: bool = False,
    work_limit: int | None = None,
) -> Instance:
    """Validate a Component's metadata and open its store (raises the project's errors).

    A recovered instance passed failFast at its Init; checking again while the backend is
    down would lose it for good (daprd will not Init it again), so it only probes. A remote
    store's cache takes at most `work_limit` distinct backend reads for keys it holds nothing for
    at once (the instance's share of the server's workers).
    """
    valid = stores.validate_component(raw, policy)
    cls, metadata = valid.cls, valid.metadata
    for prop, warning in valid.warnings:
        log.warning(warning, extra={"instance": name, "backend": cls.backend, "property": prop})
    resolver = references_resolver(metadata, instance=name) if cls.wants_resolver(metadata) else None
    store = cls(metadata, instance=name, resolver=resolver, policy=policy)
    store.on_notice = notice_counter(name, cls.backend)
    cached = CachedStore(store, metadata, instance=name, work_limit=work_limit) if cls.remote else None
    try:
        await store.open()
        if metadata.get("failFast") and not recovering:
            await _fail_fast(store, cached)
        elif cached is not None:
            cached.probe_soon()  # readiness reflects the backend without delaying Init
    except BaseException:
        await store.close()
        if resolver is not None:
            await resolver.close()
            await resolver.store.close()
        raise
    return Instance(
        name=name,
        backend=cls.backend,
        store=store,
        cached=cached,
        resolver=resolver,
        allowed=frozenset(metadata["allowedSecrets"]),
        denied=frozenset(metadata["deniedSecrets"]),
    )


async def _fail_fast(store: SecretStore, cached: CachedStore | None) -> None:
    """failFast's check, bounded so that Init answers within daprd's Init budget."""
    if cached is None:
        try:
            await asyncio.wait_for(store.check(), FAIL_FAST_BUDGET)
        except TimeoutError:
            raise DeadlineExceeded(
                f"failFast: the {store.backend} backend was not reached within {format_duration(FAIL_FAST_BUDGET)}"
            ) from None
        return
    budget = min(cached.timeout, FAIL_FAST_BUDGET)
    await cached.check(budget, bound=f"failFast checks for at most {format_duration(FAIL_FAST_BUDGET)}, "
                                     "within daprd's 5s Init budget")


def references_resolver(metadata: ParsedMetadata, *, instance: str) -> CachedStore:
    """Key Vault references read with the instance's identity, behind the instance's cache."""
    from secretbridge.azure.reference_reader import ReferenceReader

    reader = ReferenceReader(metadata, timeout=metadata["requestTimeout"], max_retries=metadata["maxRetries"])
    return CachedStore(reader, metadata, instance=instance)


class Instances:
    """The instances this process serves. Reads take no lock: a dict read is atomic."""

    def __init__(
        self,
        retire_grace: float = RETIRE_GRACE,
        *,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        state: StateStore | None = None,
        policy: OperatorPolicy = STRICT,
        work_limit: int | None = None,
    ) -> None:
        #: What the operator allowed `serve`; handed to every backend at Init.
        self.policy = policy
        #: Each remote instance's bound on distinct backend reads with nothing held (see build_instance).
        self.work_limit = work_limit
        self._by_name: dict[str, Instance] = {}
        self._write_lock = threading.Lock()
        self._init_locks: dict[str, asyncio.Lock] = {}
        self.retire_grace = retire_grace
        self.max_instances = max_instances
        self.state = state
        # Injectable so tests can move time (idle instances, readiness grace) instead of sleeping.
        self.clock: Callable[[], float] = time.monotonic
        self._retiring: dict[int, tuple[Instance, asyncio.TimerHandle]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # Saved instances being opened again after a restart; a call for one waits for it.
        self._pending: dict[str, concurrent.futures.Future[None]] = {}
        # Saved instances that could not be opened again, and why (shown to their callers).
        self._unrecovered: dict[str, str] = {}
        # Background reads of the names kept before a restart (a warm restart).
        self._warming: set[asyncio.Task[None]] = set()

    def get(self, name: str) -> Instance:
        """The instance for this header value, or FAILED_PRECONDITION naming it."""
        instance = self._by_name.get(name)
        if instance is None:
            instance = self._missing(name)
        instance.last_called = self.clock()
        return instance

    def _missing(self, name: str) -> Instance:
        pending = self._pending.get(name)
        if pending is not None:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                pending.result(RECOVERY_WAIT)
            instance = self._by_name.get(name)
            if instance is not None:
                return instance
            if name in self._pending:
                raise FailedPrecondition(
                    f"{label(name)} is still being opened again after secretbridge restarted; try again"
                )
        reason = self._unrecovered.get(name)
        if reason is not None:
            raise FailedPrecondition(f"{label(name)} {reason}")
        raise FailedPrecondition(
            f"{label(name)} is not initialised: daprd calls Init with the Component's metadata "
            "first (a failed Init leaves the instance unusable)"
        )

    def find(self, name: str) -> Instance | None:
        """The instance for this header value, if initialised."""
        return self._by_name.get(name)

    def all(self) -> list[Instance]:
        return list(self._by_name.values())

    def unrecovered(self) -> dict[str, str]:
        """Saved instances that could not be opened again after a restart, and why."""
        return dict(self._unrecovered)

    def recovering(self) -> list[str]:
        """Saved instances still being opened again."""
        return list(self._pending)

    def _check_room(self, name: str) -> None:
        if name in self._by_name or name in self._pending:
            return
        count = len(self._by_name) + len(self._pending)
        if count >= self.max_instances:
            raise FailedPrecondition(
                f"{label(name)} cannot be initialised: secretbridge already serves {count} instances, the "
                f"most --max-instances allows ({self.max_instances}). daprd never says when a Component is "
                "removed, so instances of removed Components count until the pod is replaced; raise "
                "--max-instances on `secretbridge serve` if this pod really uses that many Components"
            )

    async def init(self, name: str, raw: Mapping[str, str]) -> Instance:
        """Build (or rebuild) an instance; the old one, if any, is closed either way.

        The metadata is kept for a restart; a failed Init forgets what was kept.
        """
        self._check_room(name)
        # An Init supersedes the recovery of the same instance; calls waiting for that wait for this.
        superseded = self._pending.pop(name, None)
        lock = self._init_locks.setdefault(name, asyncio.Lock())
        try:
            async with lock:
                try:
                    instance = await build_instance(name, raw, self.policy, work_limit=self.work_limit)
                except BaseException:
                    old = self._swap(name, None)
                    if old is not None:
                        self._retire(old)
                    self._unrecovered.pop(name, None)
                    self._forget(name)
                    raise
                instance.started_at = instance.last_called = self.clock()
                old = self._swap(name, instance)
                self._unrecovered.pop(name, None)
                if old is not None:
                    self._retire(old)
                if instance.cached is None:
                    BACKEND_UP.labels(name, instance.backend).set(1)
                log.info(
                    "instance initialised",
                    extra={"instance": name or "(default)", "backend": instance.backend,
                           "multi_valued": instance.multi_valued},
                )
                await self._save(name, raw)
                return instance
        finally:
            if superseded is not None and not superseded.done():
                superseded.set_result(None)

    async def _save(self, name: str, raw: Mapping[str, str]) -> None:
        """Keep the metadata for a restart; failing to is logged, never fails the Init."""
        if self.state is None:
            return
        try:
            saved = await asyncio.to_thread(self.state.save, name, dict(raw))
        except OSError as err:
            log.warning(
                "could not keep the instance for a restart of secretbridge",
                extra={"instance": name or "(default)", "folder": str(self.state.folder),
                       "cause": f"{type(err).__name__}: {err.strerror or err}"},
            )
            return
        if saved.withheld:
            log.info(
                "instance kept for a restart without its sensitive properties; after a restart it needs a "
                "new Init from daprd",
                extra={"instance": name or "(default)", "withheld": ",".join(saved.withheld)},
            )

    def _forget(self, name: str) -> None:
        if self.state is None:
            return
        try:
            self.state.forget(name)
        except OSError as err:
            log.warning(
                "could not remove the instance's saved state",
                extra={"instance": name or "(default)", "cause": f"{type(err).__name__}: {err.strerror or err}"},
            )

    def plan_recovery(self, saved: list[Saved]) -> list[Saved]:
        """Register the saved instances (from any thread, before the socket is bound): those that
        can be opened again are pending until `recover` has opened them; the rest say why not."""
        todo: list[Saved] = []
        for item in saved:
            if len(todo) >= self.max_instances:
                log.warning("more saved instances than --max-instances; the rest are not recovered",
                            extra={"max_instances": self.max_instances})
                break
            if item.withheld:
                names = ", ".join(item.withheld)
                self._unrecovered[item.instance] = (
                    f"was initialised before secretbridge restarted, but its metadata held {names}, which "
                    "secretbridge never writes to disk; it needs a new Init from daprd (restart daprd or the pod), "
                    "or a Component that uses a managed or workload identity, which recovers by itself"
                )
                log.warning(
                    "instance not recovered: it needs properties that are never saved",
                    extra={"instance": item.instance or "(default)", "withheld": names},
                )
                continue
            self._pending[item.instance] = concurrent.futures.Future()
            todo.append(item)
        return todo

    async def recover(self, todo: list[Saved]) -> None:
        """Open again the instances `plan_recovery` registered (on the loop)."""
        await asyncio.gather(*(self._recover_one(item) for item in todo))

    async def _recover_one(self, item: Saved) -> None:
        name = item.instance
        future = self._pending.get(name)
        if future is None:
            return
        try:
            async with self._init_locks.setdefault(name, asyncio.Lock()):
                if self._pending.get(name) is not future:
                    return  # an Init came first and replaced what was saved
                try:
                    async with asyncio.timeout(RECOVERY_WAIT):
                        instance = await build_instance(
                            name, item.metadata, self.policy, recovering=True, work_limit=self.work_limit
                        )
                except Exception as err:
                    if isinstance(err, SecretStoreError):
                        cause = err.message
                    elif isinstance(err, TimeoutError):
                        cause = f"opening it took longer than {format_duration(RECOVERY_WAIT)}"
                    else:
                        cause = f"unexpected {type(err).__name__}"
                    self._unrecovered[name] = (
                        f"was initialised before secretbridge restarted but could not be opened again ({cause}); "
                        "it needs a new Init from daprd (restart daprd or the pod)"
                    )
                    log.warning("instance not recovered",
                                extra={"instance": name or "(default)", "cause": cause})
                    return
                instance.started_at = instance.last_called = self.clock()
                instance.recovered = True
                self._swap(name, instance)
                if instance.cached is None:
                    BACKEND_UP.labels(name, instance.backend).set(1)
                log.info("instance recovered after a restart",
                         extra={"instance": name or "(default)", "backend": instance.backend})
                if instance.warm_caches() and self.state is not None:
                    instance.warming = True
                    task = instance.warm_task = asyncio.get_running_loop().create_task(self._warm(instance))
                    self._warming.add(task)
                    task.add_done_callback(self._warming.discard)
        finally:
            if self._pending.get(name) is future:
                del self._pending[name]
                future.set_result(None)

    async def _warm(self, instance: Instance) -> None:
        """Read again the names the instance's caches held before the restart, so that an outage soon
        after a restart still finds them held. In the background: start-up and Init never wait on it."""
        state = self.state
        if state is None:
            return
        read = failed = 0
        try:
            kept = await asyncio.to_thread(state.load_names, instance.name)
            caches = instance.warm_caches()
            # Only what the instance may still serve (references are vault URIs, not the app's names).
            kept = {kind: [n for n in names if kind != "names" or instance._permitted(n)]
                    for kind, names in kept.items() if kind in caches}
            instance.names_kept, instance.names_kept_at = {k: tuple(v) for k, v in kept.items()}, self.clock()
            if not any(kept.values()):
                return
            concurrency = min(WARM_CONCURRENCY, max(1, (self.work_limit or WARM_CONCURRENCY * 2) // 2))
            for kind, names in kept.items():
                done, lost = await caches[kind].warm(names, concurrency)
                read, failed = read + done, failed + lost
        finally:
            instance.warming = False
        extra = {"instance": instance.name or "(default)", "backend": instance.backend, "read": read, "failed": failed}
        if failed:
            log.warning("warm restart: some secrets held before the restart could not be read again", extra=extra)
        else:
            log.info("warm restart: secrets held before the restart read again", extra=extra)

    def warming(self) -> int:
        """Instances still reading again what they held before a restart."""
        return len(self._warming)

    async def keep_names(self) -> None:
        """Keep each remote instance's held names on disk, off the read path (runs until cancelled)."""
        while True:
            await asyncio.sleep(NAMES_TICK)
            await self.write_names()

    async def write_names(self, *, now: bool = False) -> None:
        """Write the held names of every remote instance whose set changed, at most every NAMES_EVERY
        unless `now` (a graceful shutdown); a failure is logged, and tried again at the next change."""
        if self.state is None:
            return
        for instance in self.all():
            caches = instance.warm_caches()
            if not caches or instance.warming:
                continue
            clock = self.clock()
            if not now and clock - instance.names_kept_at < NAMES_EVERY:
                continue
            names = {kind: tuple(cache.held_names(MAX_NAMES)) for kind, cache in caches.items()}
            if names == instance.names_kept:
                continue
            instance.names_kept, instance.names_kept_at = names, clock
            try:
                await asyncio.to_thread(self.state.save_names, instance.name, {k: list(v) for k, v in names.items()})
            except OSError as err:
                log.warning(
                    "could not keep the held secret names for a warm restart",
                    extra={"instance": instance.name or "(default)",
                           "cause": f"{type(err).__name__}: {err.strerror or err}"},
                )

    def _swap(self, name: str, instance: Instance | None) -> Instance | None:
        with self._write_lock:
            old = self._by_name.pop(name, None)
            if instance is not None:
                self._by_name[name] = instance
            return old

    def _retire(self, old: Instance) -> None:
        """Close a replaced instance once the calls that already hold it have had time to finish.

        New calls reach the new instance at once; closing the old one under a call
        in flight would fail that call for no reason of the app's.
        """
        loop = asyncio.get_running_loop()

        def close_now() -> None:
            self._retiring.pop(id(old), None)
            task = loop.create_task(old.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

        self._retiring[id(old)] = (old, loop.call_later(self.retire_grace, close_now))

    async def close_all(self) -> None:
        with contextlib.suppress(Exception):
            await self.write_names(now=True)
        with self._write_lock:
            every = list(self._by_name.values())
            self._by_name.clear()
        for old, timer in self._retiring.values():
            timer.cancel()
            every.append(old)
        self._retiring.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_result(None)
        await asyncio.gather(*(i.close() for i in every), *self._closing)
