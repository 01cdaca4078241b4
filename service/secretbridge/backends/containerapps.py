"""`containerapps`: the Azure Container Apps secret set, mounted as a `Secret` volume.

Container Apps writes one file per secret into the volume (file name = secret name, content =
value), with the kubelet's atomic-writer layout; `backends.volume` reads it safely. Files are read
on every Get (they are small, on tmpfs), so a `..data` swap is visible at once; BulkGet scans the
folder on a worker thread. Values are served byte for byte (a trailing newline stays); a file that
is not UTF-8 is refused with FAILED_PRECONDITION (gRPC strings must be UTF-8).

A value that is a Key Vault reference, `@Microsoft.KeyVault(SecretUri=...)` or
`@Microsoft.KeyVault(VaultName=...;SecretName=...[;SecretVersion=...])`, is resolved through the
resolver the runtime hands this store (this instance's identity behind the instance's cache:
cacheTTL, single flight, stale-on-error), so versionless references pick up new versions within
cacheTTL. References may name only real Azure Key Vault hosts, plus hosts listed in
`keyVaultReferenceHosts` (emulators), so a tampered file cannot send the identity's token to a
server of its choosing.

The store is not `remote`: the runtime would otherwise cache file reads for cacheTTL and a volume
update would take that long to show. The cache properties are declared here and apply to reference
resolution only.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import ClassVar

from secretbridge.backends.contract import (
    JSON_MULTI_VALUED,
    ReferenceResolver,
    SecretStore,
    json_members,
)
from secretbridge.backends.references import KeyVaultReferences, reference_properties, wants_references
from secretbridge.backends.volume import Skip, Volume, check_secret_name, decode, valid_name
from secretbridge.core.errors import FailedPrecondition, SecretStoreError
from secretbridge.core.metadata import ParsedMetadata, Property
from secretbridge.core.names import show_name

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
)


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

    @classmethod
    def wants_resolver(cls, metadata: ParsedMetadata) -> bool:
        return wants_references(metadata)

    def __init__(
        self, metadata: ParsedMetadata, *, instance: str, resolver: ReferenceResolver | None = None
    ) -> None:
        super().__init__(metadata, instance=instance, resolver=resolver)
        self.volume = Volume(Path(str(metadata["secretsPath"])).expanduser())
        self.references = KeyVaultReferences(metadata, resolver)

    async def open(self) -> None:
        """Check secretsPath (nothing is contacted: references are resolved when first read)."""
        await asyncio.to_thread(self.volume.check)
        log.info(
            "secret volume opened",
            extra={"instance": self.instance, "path": str(self.volume.path),
                   "key_vault_references": self.references.enabled},
        )

    async def check(self) -> None:
        """With failFast: the volume is readable and every reference in it resolves."""
        await self.bulk_get()

    # -- reads ------------------------------------------------------------------------------------
    async def get(self, name: str, version: str | None = None) -> dict[str, str]:
        check_secret_name(name)
        try:
            # One small file on tmpfs: cheaper inline than a hop to a worker thread.
            raw = self.volume.read(name)
        except Skip as skip:
            raise skip.error from None
        return await self._value(name, decode(name, raw))

    async def bulk_get(self, limit: int | None = None) -> dict[str, dict[str, str]]:
        texts = await asyncio.to_thread(self._scan)
        names = list(texts)[:limit] if limit is not None else list(texts)
        values = await asyncio.gather(*(self._value(name, texts[name]) for name in names), return_exceptions=True)
        result: dict[str, dict[str, str]] = {}
        for name, value in zip(names, values, strict=True):
            if isinstance(value, BaseException):
                if isinstance(value, SecretStoreError):
                    raise type(value)(f"BulkGet stopped at secret {show_name(name)}: {value.message}") from None
                raise value
            result[name] = value
        return result

    def _scan(self) -> dict[str, str]:
        """Every servable secret's text, on a worker thread; what is not servable is left out."""
        texts: dict[str, str] = {}
        for name in self.volume.names():
            if not valid_name(name):
                log.warning(
                    "a file in the secret volume has a name that cannot be served; left out of BulkGet",
                    extra={"instance": self.instance, "secret": show_name(name)},
                )
                continue
            try:
                texts[name] = decode(name, self.volume.read(name))
            except Skip as skip:
                if not skip.quiet:
                    log.warning(
                        "left out of BulkGet",
                        extra={"instance": self.instance, "secret": name, "reason": skip.error.message},
                    )
            except FailedPrecondition as err:
                log.warning(
                    "left out of BulkGet",
                    extra={"instance": self.instance, "secret": name, "reason": err.message},
                )
        return texts

    async def _value(self, name: str, text: str) -> dict[str, str]:
        if self.references.applies(text):
            text = await self.references.resolve(name, text)
        return self._shape(name, text)

    def _shape(self, name: str, value: str) -> dict[str, str]:
        return json_members(name, value) if self.multi_valued else {name: value}
