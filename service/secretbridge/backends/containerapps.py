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
from pathlib import Path
from typing import ClassVar

from secretbridge.azure.hosts import operator_listed, parse_vault_host, show_host
from secretbridge.azure.identity import AZURE_PROPERTIES, environment_of
from secretbridge.azure.references import is_reference, vet_reference
from secretbridge.backends.contract import (
    CACHE_PROPERTIES,
    JSON_MULTI_VALUED,
    ReferenceResolver,
    SecretStore,
    json_members,
)
from secretbridge.backends.volume import Skip, Volume, check_secret_name, decode, valid_name
from secretbridge.core.errors import FailedPrecondition, SecretStoreError
from secretbridge.core.metadata import Kind, MetadataErrors, ParsedMetadata, Property
from secretbridge.core.names import show_name
from secretbridge.core.policy import ALLOW_VAULT_HOSTS_SETTING, STRICT, OperatorPolicy

log = logging.getLogger(__name__)

DEFAULT_SECRETS_PATH = "/mnt/secrets"


def _check_hosts(hosts: tuple[str, ...]) -> str | None:
    for host in hosts:
        try:
            parse_vault_host(host)
        except ValueError as err:
            return f"must list hosts as host or host:port: {err}"
    return None


CONTAINERAPPS_PROPERTIES: tuple[Property, ...] = (
    Property(
        "secretsPath",
        "The folder where the Container Apps `Secret` volume is mounted: one file per secret, named "
        "after it.",
        default=DEFAULT_SECRETS_PATH,
    ),
    JSON_MULTI_VALUED,
    Property(
        "resolveKeyVaultReferences",
        "Resolve values of the form `@Microsoft.KeyVault(...)` through Key Vault with this "
        "instance's identity; `false` serves them as the literal text.",
        Kind.BOOL,
        default=True,
    ),
    Property(
        "keyVaultReferenceHosts",
        "Deprecated: hosts outside Azure are the operator's to allow (`serve --allow-vault-host`). "
        "Accepted with a warning only when every entry is a host the operator listed too.",
        Kind.LIST,
        default=(),
        check=_check_hosts,
    ),
    Property(
        "maxRetries",
        "Retries of one Key Vault or token-endpoint call while resolving a reference (the Azure "
        "SDK's retry_total/retry_status); 429 with Retry-After is waited out within them.",
        Kind.INT,
        default=3,
        minimum=0,
        maximum=10,
    ),
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
        *AZURE_PROPERTIES,
        *CACHE_PROPERTIES,
    )

    @classmethod
    def wants_resolver(cls, metadata: ParsedMetadata) -> bool:
        return bool(metadata["resolveKeyVaultReferences"])

    @classmethod
    def validate(cls, metadata: ParsedMetadata, policy: OperatorPolicy = STRICT) -> list[str]:
        """`keyVaultReferenceHosts` (deprecated) may name only hosts the operator listed; warns when
        it is set at all, and when references are served as literal text anyway."""
        warnings = super().validate(metadata, policy)
        hosts = metadata["keyVaultReferenceHosts"] if metadata.known("keyVaultReferenceHosts") else ()
        problems: list[tuple[str, str]] = []
        for entry in hosts:
            host, port = parse_vault_host(entry)
            if not operator_listed(policy.vault_hosts, host, port):
                problems.append(("keyVaultReferenceHosts", (
                    f"metadata property 'keyVaultReferenceHosts' lists {show_host(host, port)}, which the operator "
                    f"has not allowed; a Component cannot allow a vault host outside Azure itself: start serve "
                    f"with --allow-vault-host {show_host(host, port)} (or list it in SECRETBRIDGE_ALLOW_VAULT_HOSTS)"
                )))
        if problems:
            raise MetadataErrors(problems)
        if hosts:
            warnings.append(
                "metadata property 'keyVaultReferenceHosts' is deprecated and grants nothing: hosts outside "
                f"Azure are allowed by the operator ({ALLOW_VAULT_HOSTS_SETTING}); remove it"
            )
            if metadata.known("resolveKeyVaultReferences") and not metadata["resolveKeyVaultReferences"]:
                warnings.append(
                    "metadata property 'keyVaultReferenceHosts' has no effect: resolveKeyVaultReferences is false"
                )
        return warnings

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
        self.resolve_references = bool(metadata["resolveKeyVaultReferences"])
        self.allowed_hosts = policy.vault_hosts

    async def open(self) -> None:
        """Check secretsPath (nothing is contacted: references are resolved when first read)."""
        await asyncio.to_thread(self.volume.check)
        log.info(
            "secret volume opened",
            extra={"instance": self.instance, "path": str(self.volume.path),
                   "key_vault_references": self.resolve_references},
        )

    async def check(self) -> None:
        """With failFast: the volume is readable and every reference in it resolves."""
        await self.bulk_get()

    # -- reads ------------------------------------------------------------------------------------
    async def get(self, name: str, version: str | None = None) -> dict[str, str]:
        check_secret_name(name)
        try:
            # On a worker thread: secretsPath may be any mount, and a stuck one must not stall
            # the loop every other instance shares.
            raw = await asyncio.to_thread(self.volume.read, name)
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

    async def _value(self, name: str, text: str) -> dict[str, str]:
        if self.resolve_references and is_reference(text):
            text = await self._resolve(name, text)
        return self._shape(name, text)

    def _shape(self, name: str, value: str) -> dict[str, str]:
        return json_members(name, value) if self.multi_valued else {name: value}

    # -- references -------------------------------------------------------------------------------
    async def _resolve(self, name: str, text: str) -> str:
        target = vet_reference(name, text, environment_of(self.metadata), self.allowed_hosts)
        if self.resolver is None:
            raise FailedPrecondition(f"secret {show_name(name)}: Key Vault reference resolution is not open")
        try:
            data = await self.resolver.get(target.key, target.version)
        except SecretStoreError as err:
            raise type(err)(
                f"secret {show_name(name)} is a Key Vault reference to {target.shown} that cannot be "
                f"resolved: {err.message}"
            ) from None
        return data[target.key]
