"""`containerapps`: the Azure Container Apps secret set, mounted as a `Secret` volume.

Container Apps writes one file per secret into the volume (file name = secret name, content =
value), with the kubelet's atomic-writer layout; `backends.volume` reads it safely. A Get is
answered on the gRPC worker (`read_now`) from what was read under the volume's current `..data`
target: one readlink and one stat, at most every `recheckInterval` (1 s), tell whether a swap
happened, so a swap is served within that long (0 looks on every read). In a plain folder (no
`..data`) a file's stat, as often, decides whether it is read again.
BulkGet scans the folder on a worker thread. Values are served byte for byte (a trailing newline stays); a file that
is not UTF-8 is refused with FAILED_PRECONDITION (gRPC strings must be UTF-8).

A value that is a Key Vault reference, `@Microsoft.KeyVault(SecretUri=...)` or
`@Microsoft.KeyVault(VaultName=...;SecretName=...[;SecretVersion=...])`, is resolved through the
resolver the runtime hands this store (this instance's identity behind the instance's cache:
cacheTTL, single flight, stale-on-error), so versionless references pick up new versions within
cacheTTL. References may name only real Azure Key Vault hosts, plus hosts the operator listed with
`serve --allow-vault-host` (emulators), so a tampered file cannot send the identity's token to a
server of its choosing. The old `keyVaultReferenceHosts` metadata grants nothing by itself: it is
accepted, with a deprecation warning, only for hosts the operator listed too.

The store is not `remote`: the runtime would otherwise cache file reads for cacheTTL and a volume
update would take that long to show. The cache properties are declared here and apply to reference
resolution only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from secretbridge.azure.references import ReferenceTarget
from secretbridge.backends.contract import (
    CERTIFICATE_FORMAT,
    JSON_MULTI_VALUED,
    ReferenceResolver,
    SecretStore,
    json_members,
)
from secretbridge.backends.recheck import RECHECK_INTERVAL, Recheck
from secretbridge.backends.references import (
    KeyVaultReferences,
    reference_properties,
    validate_references,
    wants_references,
)
from secretbridge.backends.volume import Skip, Volume, check_secret_name, decode, valid_name
from secretbridge.core.errors import FailedPrecondition, NotFound, SecretStoreError
from secretbridge.core.metadata import ParsedMetadata, Property
from secretbridge.core.names import DEFAULT_VIEW, View, show_name
from secretbridge.core.policy import STRICT, OperatorPolicy

log = logging.getLogger(__name__)

DEFAULT_SECRETS_PATH = "/mnt/secrets"


CONTAINERAPPS_PROPERTIES: tuple[Property, ...] = (
    Property(
        "secretsPath",
        "The folder where the Container Apps `Secret` volume is mounted: one file per secret, named "
        "after it.",
        default=DEFAULT_SECRETS_PATH,
    ),
    JSON_MULTI_VALUED,
    CERTIFICATE_FORMAT,
    RECHECK_INTERVAL,
)


#: The most names remembered per volume generation (names asked for but missing count too).
_KNOWN_MAX = 10_000
#: A plain-folder file changed this recently is read again on every Get: a rewrite within the
#: filesystem's timestamp granularity may leave its stat unchanged.
_SETTLE_NS = 2_000_000_000


@dataclass(frozen=True)
class _Known:
    """What one read of a secret's file found: its answer, a reference to resolve, or its absence."""

    data: dict[str, str] | None = None
    reference: ReferenceTarget | None = None
    missing: NotFound | None = None


class ContainerAppsStore(SecretStore):
    """Secrets from a mounted Container Apps `Secret` volume, Key Vault references resolved."""

    backend: ClassVar[str] = "containerapps"
    summary: ClassVar[str] = (
        "The Container Apps secret set mounted as a Secret volume (one file per secret); "
        "@Microsoft.KeyVault(...) values are resolved with the app's identity."
    )
    properties: ClassVar[tuple[Property, ...]] = (
        *CONTAINERAPPS_PROPERTIES,
        *reference_properties("serves them as the literal text"),
    )
    serves_certificates: ClassVar[bool] = True

    @classmethod
    def wants_resolver(cls, metadata: ParsedMetadata) -> bool:
        return wants_references(metadata)

    @classmethod
    def validate(cls, metadata: ParsedMetadata, policy: OperatorPolicy = STRICT) -> list[str]:
        """The reference rules shared with `env` (`keyVaultReferenceHosts` only repeats the operator's)."""
        return super().validate(metadata, policy) + validate_references(metadata, policy)

    def __init__(
        self,
        metadata: ParsedMetadata,
        *,
        instance: str,
        resolver: ReferenceResolver | None = None,
        policy: OperatorPolicy = STRICT,
    ) -> None:
        super().__init__(metadata, instance=instance, resolver=resolver, policy=policy)
        self.volume = Volume(Path(str(metadata["secretsPath"])).expanduser(), policy.max_file_bytes)
        self.references = KeyVaultReferences(metadata, resolver, policy)
        # (generation, name -> _Known) for an atomic-writer volume; replaced whole on a swap.
        self._by_generation: tuple[tuple[int, int, str] | None, dict[str, _Known]] = (None, {})
        # name -> (signature, _Known, when it was last stat'ed) for a plain folder.
        self._by_signature: dict[str, tuple[tuple[int, int, int, int], _Known, float]] = {}
        # The volume's generation when it was last looked at (None: a plain folder); see _generation_now.
        self.recheck = Recheck(metadata["recheckInterval"])
        self._generation: tuple[int, int, str] | None = None

    async def open(self) -> None:
        """Check secretsPath (nothing is contacted: references are resolved when first read)."""
        await asyncio.to_thread(self._open_volume)
        log.info(
            "secret volume opened",
            extra={"instance": self.instance, "path": str(self.volume.path),
                   "key_vault_references": self.references.enabled},
        )

    def _open_volume(self) -> None:
        self.volume.check()
        self._generation = self.volume.generation()
        self.recheck.seen()

    async def check(self) -> None:
        """With failFast: the volume is readable and every reference in it resolves."""
        await self.bulk_get()

    # -- reads ------------------------------------------------------------------------------------
    def read_now(self, name: str, version: str | None = None, view: View = DEFAULT_VIEW) -> dict[str, str] | None:
        """On the gRPC worker: the volume's current content, and references the resolver has cached
        (a certificate, file or referenced, in the shape `view` asks for)."""
        known = self._known(name)
        if known.missing is not None:
            raise known.missing
        target = known.reference
        if target is None:
            return self.shape_data(name, known.data or {}, view)
        if self.resolver is None:
            return None  # get() says why
        resolved = self.resolver.peek(target.key, target.version)
        return self._shape(name, resolved[target.key], view) if resolved is not None else None

    async def get(self, name: str, version: str | None = None, view: View = DEFAULT_VIEW) -> dict[str, str]:
        # On a worker thread: secretsPath may be any mount, and a stuck one must not stall the
        # loop every other instance shares.
        data = await asyncio.to_thread(self.read_now, name, version, view)
        if data is not None:
            return dict(data)
        known = await asyncio.to_thread(self._known, name)  # a reference, unless the volume changed
        if known.missing is not None:
            raise known.missing
        if known.reference is None:
            data = known.data or {}
            return dict(await self.shape_off_loop(view, lambda: self.shape_data(name, data, view)))
        value = await self._resolve_target(name, known.reference)
        return await self.shape_off_loop(view, lambda: self._shape(name, value, view))

    def _known(self, name: str) -> _Known:
        """What the volume holds for `name` now, read again only when the volume changed.

        A name is checked (`check_secret_name`) before it reaches the filesystem; one remembered
        here passed that check, so a Get of a name read before costs no check again."""
        generation = self._generation_now()
        if generation is not None:
            current, known_by_name = self._by_generation
            if current != generation:
                known_by_name = {}
                self._by_generation = (generation, known_by_name)
            known = known_by_name.get(name)
            if known is None:
                check_secret_name(name)
                # Read after the generation was taken: never older than the key it is filed under.
                known = self._read_known(name)
                if len(known_by_name) < _KNOWN_MAX:
                    known_by_name[name] = known
            return known
        remembered = self._by_signature.get(name)
        if remembered is not None and self.recheck.recent(remembered[2]):
            return remembered[1]
        check_secret_name(name)
        now = self.recheck.clock()
        signature = self.volume.signature(name)
        if remembered is not None and signature is not None and remembered[0] == signature:
            self._by_signature[name] = (signature, remembered[1], now)
            return remembered[1]
        known = self._read_known(name)
        if signature is not None and time.time_ns() - signature[2] >= _SETTLE_NS:
            if len(self._by_signature) >= _KNOWN_MAX:
                self._by_signature.clear()
            self._by_signature[name] = (signature, known, now)
        elif remembered is not None:
            del self._by_signature[name]
        return known

    def _generation_now(self) -> tuple[int, int, str] | None:
        """The volume's generation, looked at again (one readlink, one stat) at most every recheckInterval."""
        if self.recheck.claim():
            try:
                self._generation = self.volume.generation()
            finally:
                self.recheck.done()
        return self._generation

    def _read_known(self, name: str) -> _Known:
        """Read `name`'s file safely; only its absence is remembered among failures."""
        try:
            # On the calling thread, never the loop: a gRPC worker (read_now), or a worker thread
            # (get); once per volume generation, or per change of the file in a plain folder.
            raw = self.volume.read(name)
        except Skip as skip:
            if skip.quiet and isinstance(skip.error, NotFound):
                return _Known(missing=skip.error)
            raise skip.error from None
        text = decode(name, raw)
        if self.references.applies(text):
            return _Known(reference=self._vet(name, text))
        return _Known(data=self._plain(name, text))

    async def bulk_get(self, limit: int | None = None, view: View = DEFAULT_VIEW) -> dict[str, dict[str, str]]:
        texts = await asyncio.to_thread(self._scan)
        names = list(texts)[:limit] if limit is not None else list(texts)
        values = await asyncio.gather(
            *(self._value(name, texts[name], view) for name in names), return_exceptions=True
        )
        result: dict[str, dict[str, str]] = {}
        for name, value in zip(names, values, strict=True):
            if isinstance(value, BaseException):
                if isinstance(value, SecretStoreError):
                    raise type(value)(f"BulkGet stopped at secret {show_name(name)}: {value.message}") from None
                raise value
            result[name] = value
        return result

    def _scan(self) -> dict[str, str]:
        """Every servable secret's text, on a worker thread; what is not servable is left out.

        The whole scan stops at the operator's volume cap: a volume is a small set of secrets, and
        the answer must fit in memory and on the wire."""
        texts: dict[str, str] = {}
        total = 0
        cap = self.policy.max_volume_bytes
        for name in self.volume.names():
            if not valid_name(name):
                log.warning(
                    "a file in the secret volume has a name that cannot be served; left out of BulkGet",
                    extra={"instance": self.instance, "secret": show_name(name)},
                )
                continue
            try:
                raw = self.volume.read(name)
            except Skip as skip:
                if not skip.quiet:
                    log.warning(
                        "left out of BulkGet",
                        extra={"instance": self.instance, "secret": name, "reason": skip.error.message},
                    )
                continue
            total += len(raw)
            if total > cap:
                raise FailedPrecondition(
                    f"metadata property 'secretsPath' names {str(self.volume.path)!r}, which holds more than "
                    f"the {cap}-byte cap for one volume (the operator's --max-volume-bytes)"
                )
            try:
                texts[name] = decode(name, raw)
            except FailedPrecondition as err:
                log.warning(
                    "left out of BulkGet",
                    extra={"instance": self.instance, "secret": name, "reason": err.message},
                )
        return texts

    async def _value(self, name: str, text: str, view: View) -> dict[str, str]:
        if self.references.applies(text):
            text = await self._resolve(name, text)
        return await self.shape_off_loop(view, lambda: self._shape(name, text, view, bulk=True))

    def _plain(self, name: str, value: str) -> dict[str, str]:
        return json_members(name, value) if self.multi_valued else {name: value}

    def _shape(self, name: str, value: str, view: View, *, bulk: bool = False) -> dict[str, str]:
        """A value as served: a certificate in the shape `view` asks for, else as `_plain`."""
        return self.shape_data(name, self._plain(name, value), view, bulk=bulk)

    # -- references: vetted when a file is read, resolved (through the shared helper) when served ------
    def _vet(self, name: str, text: str) -> ReferenceTarget:
        return self.references.vet(name, text)

    async def _resolve(self, name: str, text: str) -> str:
        return await self.references.resolve(name, text)

    async def _resolve_target(self, name: str, target: ReferenceTarget) -> str:
        return await self.references.resolve_target(name, target)
