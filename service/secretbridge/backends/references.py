"""Key Vault references in a backend's values: `@Microsoft.KeyVault(SecretUri=...)` and
`@Microsoft.KeyVault(VaultName=...;SecretName=...[;SecretVersion=...])`, the form App Service and
Container Apps put in place of a value.

One helper for every backend that serves them (`containerapps`, `env`): the properties they declare,
and `KeyVaultReferences.resolve`, which vets a reference (`azure.references.vet_reference`: only
real Key Vault hosts, plus the hosts the rules allow) and reads it through the resolver the runtime
hands the store (the instance's identity behind the instance's cache).
"""

from __future__ import annotations

from secretbridge.azure.identity import AZURE_PROPERTIES, environment_of
from secretbridge.azure.references import is_reference, vet_reference
from secretbridge.backends.contract import CACHE_PROPERTIES, ReferenceResolver
from secretbridge.core.errors import FailedPrecondition, SecretStoreError
from secretbridge.core.metadata import Kind, ParsedMetadata, Property
from secretbridge.core.names import show_name


def _check_hosts(hosts: tuple[str, ...]) -> str | None:
    for host in hosts:
        if "/" in host or "@" in host or not host.strip(":"):
            return f"must list hosts as host or host:port (no scheme, path or user), got {host!r}"
    return None


def reference_properties(literal: str) -> tuple[Property, ...]:
    """What a backend serving references declares: the switch, the hosts, retries, the identity
    (`AZURE_PROPERTIES`) and the cache in front of resolution (`CACHE_PROPERTIES`).

    `literal` says what `resolveKeyVaultReferences: false` does with a reference in this backend.
    """
    return (
        Property(
            "resolveKeyVaultReferences",
            "Resolve values of the form `@Microsoft.KeyVault(...)` through Key Vault with this "
            f"instance's identity; an unresolvable one is an error, never the literal. `false` {literal}.",
            Kind.BOOL,
            default=True,
        ),
        Property(
            "keyVaultReferenceHosts",
            "Comma-separated `host:port` entries a Key Vault reference may name besides real Azure "
            "Key Vault hosts; for emulators and test doubles only (the challenge's resource is not "
            "verified for them).",
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
        *AZURE_PROPERTIES,
        *CACHE_PROPERTIES,
    )


def wants_references(metadata: ParsedMetadata) -> bool:
    """Whether the Component resolves references (and so needs a resolver from the runtime)."""
    return bool(metadata.get("resolveKeyVaultReferences", False))


class KeyVaultReferences:
    """Resolves the references one store serves, with the resolver the runtime handed it."""

    def __init__(self, metadata: ParsedMetadata, resolver: ReferenceResolver | None) -> None:
        self.enabled = wants_references(metadata)
        self.environment = environment_of(metadata)
        self.allowed_hosts = frozenset(h.strip().lower() for h in metadata.get("keyVaultReferenceHosts") or ())
        self.resolver = resolver

    def applies(self, text: str) -> bool:
        """Whether `text` is a reference this store must resolve rather than serve."""
        return self.enabled and is_reference(text)

    async def resolve(self, name: str, text: str) -> str:
        """The value the reference held by secret `name` points at; raises naming both and the cause.

        The literal is never part of a message: it is the secret's value.
        """
        target = vet_reference(name, text, self.environment, self.allowed_hosts)
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
