"""Key Vault references in a backend's values: `@Microsoft.KeyVault(SecretUri=...)` and
`@Microsoft.KeyVault(VaultName=...;SecretName=...[;SecretVersion=...])`, the form App Service and
Container Apps put in place of a value.

One helper for every backend that serves them (`containerapps`, `env`): the properties they declare,
and `KeyVaultReferences.resolve`, which vets a reference (`azure.references.vet_reference`: only
real Key Vault hosts, plus the hosts the rules allow) and reads it through the resolver the runtime
hands the store (the instance's identity behind the instance's cache).
"""

from __future__ import annotations

from secretbridge.azure.budget import MAX_THROTTLED_RESENDS
from secretbridge.azure.hosts import operator_listed, parse_vault_host, show_host
from secretbridge.azure.identity import AZURE_PROPERTIES, environment_of
from secretbridge.azure.references import ReferenceTarget, is_reference, vet_reference
from secretbridge.backends.contract import CACHE_PROPERTIES, ReferenceResolver
from secretbridge.core.errors import FailedPrecondition, SecretStoreError
from secretbridge.core.metadata import Kind, MetadataErrors, ParsedMetadata, Property
from secretbridge.core.names import show_name
from secretbridge.core.policy import ALLOW_VAULT_HOSTS_SETTING, STRICT, OperatorPolicy


def _check_hosts(hosts: tuple[str, ...]) -> str | None:
    for host in hosts:
        try:
            parse_vault_host(host)
        except ValueError as err:
            return f"must list hosts as host or host:port: {err}"
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
            "Deprecated: hosts outside Azure are the operator's to allow (`serve --allow-vault-host`). "
            "Accepted with a warning only when every entry is a host the operator listed too.",
            Kind.LIST,
            default=(),
            check=_check_hosts,
        ),
        Property(
            "maxRetries",
            "Retries of one Key Vault or token-endpoint call while resolving a reference (the Azure "
            "SDK's retry_total/retry_status); a 429 is first waited out (Retry-After, for every request to "
            f"the vault) and resent up to {MAX_THROTTLED_RESENDS} times before it counts as one.",
            Kind.INT,
            default=3,
            minimum=0,
            maximum=10,
        ),
        *AZURE_PROPERTIES,
        *CACHE_PROPERTIES,
    )


def validate_references(metadata: ParsedMetadata, policy: OperatorPolicy) -> list[str]:
    """`keyVaultReferenceHosts` (deprecated) may name only hosts the operator listed (else
    `MetadataErrors`); warns when it is set at all, and when references are served literally anyway."""
    warnings: list[str] = []
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


def wants_references(metadata: ParsedMetadata) -> bool:
    """Whether the Component resolves references (and so needs a resolver from the runtime)."""
    return bool(metadata.get("resolveKeyVaultReferences", False))


class KeyVaultReferences:
    """Resolves the references one store serves, with the resolver the runtime handed it."""

    def __init__(
        self, metadata: ParsedMetadata, resolver: ReferenceResolver | None, policy: OperatorPolicy = STRICT
    ) -> None:
        self.enabled = wants_references(metadata)
        self.environment = environment_of(metadata)
        # Hosts outside Azure are the operator's to allow, never a Component's.
        self.allowed_hosts = policy.vault_hosts
        self.resolver = resolver

    def applies(self, text: str) -> bool:
        """Whether `text` is a reference this store must resolve rather than serve."""
        return self.enabled and is_reference(text)

    def vet(self, name: str, text: str) -> ReferenceTarget:
        """Where the reference held by secret `name` points (refused outside Azure and the operator's hosts)."""
        return vet_reference(name, text, self.environment, self.allowed_hosts)

    async def resolve(self, name: str, text: str) -> str:
        """The value the reference held by secret `name` points at; raises naming both and the cause.

        The literal is never part of a message: it is the secret's value.
        """
        return await self.resolve_target(name, self.vet(name, text))

    async def resolve_target(self, name: str, target: ReferenceTarget) -> str:
        """The value at a vetted reference's `target` (secret `name` held it)."""
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
