"""Per-instance state, keyed by the `x-component-instance` gRPC metadata.

daprd opens one connection per Component and names it in every call; several
Components may share this one socket, each with its own backend. `Init` builds
an `Instance` from the Component's metadata; a later `Init` for the same name
(daprd's hot reload) replaces it and closes the old one; a failed `Init` leaves
nothing behind, so an instance whose Init failed serves nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from secretbridge import backends as stores
from secretbridge.backends.contract import MULTIPLE_KEY_VALUES_PER_SECRET, SecretStore
from secretbridge.core.errors import FailedPrecondition, PermissionDenied
from secretbridge.core.metadata import ParsedMetadata
from secretbridge.core.names import check_name, get_options, show_name
from secretbridge.runtime.cache import CachedStore
from secretbridge.runtime.metrics import notice_counter

log = logging.getLogger(__name__)

#: The instance used when a call carries no `x-component-instance` header.
DEFAULT_INSTANCE = ""
#: How long a replaced instance stays open for the calls already using it (daprd's hot reload).
RETIRE_GRACE = 10.0
#: Local stores have no requestTimeout; this bounds a call on a stuck filesystem.
LOCAL_TIMEOUT = 30.0

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

    def check_get(self, name: str, metadata: Mapping[str, str]) -> str | None:
        """Everything a Get must pass before any store sees it; returns the version asked for."""
        check_name(name)
        options = get_options(metadata, supports_versions=self.supports_versions, backend=self.backend)
        self.permit(name)
        return options.version

    def permit(self, name: str) -> None:
        """Refuse a name the Component's allow or deny list rules out."""
        if name in self.denied:
            raise PermissionDenied(f"secret {show_name(name)} is listed in deniedSecrets")
        if self.allowed and name not in self.allowed:
            raise PermissionDenied(f"secret {show_name(name)} is not listed in allowedSecrets")

    def _permitted(self, name: str) -> bool:
        return name not in self.denied and (not self.allowed or name in self.allowed)

    def peek(self, name: str, version: str | None) -> dict[str, str] | None:
        """A fresh cached answer, from any thread, without touching the loop; else None."""
        return self.cached.peek(name, version) if self.cached is not None else None

    async def get(self, name: str, version: str | None) -> dict[str, str]:
        reader = self.cached or self.store
        return await reader.get(name, version)

    async def bulk_get(self, limit: int | None) -> dict[str, dict[str, str]]:
        reader = self.cached or self.store
        if not self.allowed and not self.denied:
            return await reader.bulk_get(limit)
        # Filtering may drop names, so ask for everything and cut afterwards.
        every = await reader.bulk_get(None)
        kept = {name: data for name, data in every.items() if self._permitted(name)}
        if limit is not None:
            kept = dict(list(kept.items())[:limit])
        return kept

    async def close(self) -> None:
        try:
            if self.cached is not None:
                await self.cached.close()
            await self.store.close()
            if self.resolver is not None:
                await self.resolver.close()
                await self.resolver.store.close()
        except Exception:
            log.exception("closing a store failed", extra={"instance": self.name, "backend": self.backend})


async def build_instance(name: str, raw: Mapping[str, str]) -> Instance:
    """Validate a Component's metadata and open its store (raises the project's errors)."""
    valid = stores.validate_component(raw)
    cls, metadata = valid.cls, valid.metadata
    for prop, warning in valid.warnings:
        log.warning(warning, extra={"instance": name, "backend": cls.backend, "property": prop})
    resolver = references_resolver(metadata, instance=name) if cls.wants_resolver(metadata) else None
    store = cls(metadata, instance=name, resolver=resolver)
    store.on_notice = notice_counter(name, cls.backend)
    cached = CachedStore(store, metadata, instance=name) if cls.remote else None
    try:
        await store.open()
        if metadata.get("failFast"):
            await (cached.check() if cached is not None else store.check())
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


def references_resolver(metadata: ParsedMetadata, *, instance: str) -> CachedStore:
    """Key Vault references read with the instance's identity, behind the instance's cache."""
    from secretbridge.azure.reference_reader import ReferenceReader

    reader = ReferenceReader(metadata, timeout=metadata["requestTimeout"], max_retries=metadata["maxRetries"])
    return CachedStore(reader, metadata, instance=instance)


class Instances:
    """The instances this process serves. Reads take no lock: a dict read is atomic."""

    def __init__(self, retire_grace: float = RETIRE_GRACE) -> None:
        self._by_name: dict[str, Instance] = {}
        self._write_lock = threading.Lock()
        self._init_locks: dict[str, asyncio.Lock] = {}
        self.retire_grace = retire_grace
        self._retiring: dict[int, tuple[Instance, asyncio.TimerHandle]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, name: str) -> Instance:
        """The instance for this header value, or FAILED_PRECONDITION naming it."""
        instance = self._by_name.get(name)
        if instance is None:
            raise FailedPrecondition(
                f"{label(name)} is not initialised: daprd calls Init with the Component's metadata "
                "first (a failed Init leaves the instance unusable)"
            )
        return instance

    def find(self, name: str) -> Instance | None:
        """The instance for this header value, if initialised."""
        return self._by_name.get(name)

    def all(self) -> list[Instance]:
        return list(self._by_name.values())

    async def init(self, name: str, raw: Mapping[str, str]) -> Instance:
        """Build (or rebuild) an instance; the old one, if any, is closed either way."""
        lock = self._init_locks.setdefault(name, asyncio.Lock())
        async with lock:
            try:
                instance = await build_instance(name, raw)
            except BaseException:
                old = self._swap(name, None)
                if old is not None:
                    self._retire(old)
                raise
            old = self._swap(name, instance)
            if old is not None:
                self._retire(old)
            log.info(
                "instance initialised",
                extra={"instance": name or "(default)", "backend": instance.backend,
                       "multi_valued": instance.multi_valued},
            )
            return instance

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
        with self._write_lock:
            every = list(self._by_name.values())
            self._by_name.clear()
        for old, timer in self._retiring.values():
            timer.cancel()
            every.append(old)
        self._retiring.clear()
        await asyncio.gather(*(i.close() for i in every), *self._closing)
