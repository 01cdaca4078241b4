"""`env`: secrets from this process's environment, e.g. Container Apps `secretRef` variables.

Like Dapr's local.env, `prefix` is prepended on the way in and stripped from
bulk names. Unlike it, an unknown name is NOT_FOUND (local.env answers an empty
value, which an app cannot tell from a real empty secret), and the sidecar's own
credentials are never served: `DAPR_*`, `APP_API_TOKEN`, and the managed-identity
and service-principal variables the Azure SDK reads.

A variable whose value is a Key Vault reference (`@Microsoft.KeyVault(...)`: App Service leaves
one it could not resolve in the environment as that literal text) is resolved through this
instance's identity, exactly as the `containerapps` backend does (`backends.references`), so an
app never gets the reference itself as its "password". An unresolvable one is an error naming
the variable, the referenced secret and the cause. `resolveKeyVaultReferences: "false"` turns
resolution off and serves such values as they are.
"""

from __future__ import annotations

import asyncio
import os
from typing import ClassVar

from secretbridge.backends.contract import ReferenceResolver, SecretStore
from secretbridge.backends.references import (
    KeyVaultReferences,
    reference_properties,
    validate_references,
    wants_references,
)
from secretbridge.core.errors import NotFound, PermissionDenied, SecretStoreError
from secretbridge.core.metadata import ParsedMetadata, Property
from secretbridge.core.names import DEFAULT_VIEW, View, show_name
from secretbridge.core.policy import STRICT, OperatorPolicy

#: Variables that hold this process's own credentials or Dapr's, never app secrets.
FORBIDDEN = frozenset(
    {
        "APP_API_TOKEN",
        "IDENTITY_HEADER",
        "IDENTITY_SERVER_THUMBPRINT",
        "MSI_SECRET",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    }
)


def forbidden(variable: str) -> bool:
    """Whether a variable is one this store never serves."""
    upper = variable.upper()
    return upper.startswith("DAPR_") or upper in FORBIDDEN


class EnvStore(SecretStore):
    """Secrets from environment variables."""

    backend: ClassVar[str] = "env"
    summary: ClassVar[str] = (
        "Environment variables, e.g. Container Apps secretRef variables; never DAPR_*, APP_API_TOKEN "
        "or the identity variables."
    )
    properties: ClassVar[tuple[Property, ...]] = (
        Property(
            "prefix",
            "Only variables starting with this are served, by the name after it "
            "(prefix `APP_` serves APP_DB_PASSWORD as DB_PASSWORD).",
            default="",
        ),
        *reference_properties("serves such a variable's text as it is"),
    )

    @classmethod
    def validate(cls, metadata: ParsedMetadata, policy: OperatorPolicy = STRICT) -> list[str]:
        """Warns when `prefix` selects only variables this store never serves."""
        prefix = str(metadata.get("prefix") or "")
        if metadata.known("prefix") and prefix.upper().startswith("DAPR_"):
            return [f"metadata property 'prefix' is {prefix!r}: DAPR_* variables are never served, so this "
                    "Component serves nothing", *validate_references(metadata, policy)]
        return validate_references(metadata, policy)

    @classmethod
    def wants_resolver(cls, metadata: ParsedMetadata) -> bool:
        return wants_references(metadata)

    def __init__(
        self,
        metadata: ParsedMetadata,
        *,
        instance: str,
        resolver: ReferenceResolver | None = None,
        policy: OperatorPolicy = STRICT,
    ) -> None:
        super().__init__(metadata, instance=instance, resolver=resolver, policy=policy)
        self.references = KeyVaultReferences(metadata, resolver, policy)

    @property
    def prefix(self) -> str:
        return str(self.metadata["prefix"])

    def _variable(self, name: str) -> tuple[str, str]:
        """(variable, value) for secret `name`, or the refusal naming the variable."""
        variable = self.prefix + name
        if forbidden(variable):
            raise PermissionDenied(
                f"environment variable {show_name(variable)} belongs to Dapr or to this sidecar's identity "
                "and is never served"
            )
        value = os.environ.get(variable)
        if value is None:
            raise NotFound(f"secret {show_name(name)} not found: no environment variable {show_name(variable)}")
        return variable, value

    def read_now(self, name: str, version: str | None = None, view: View = DEFAULT_VIEW) -> dict[str, str] | None:
        """os.environ is memory: a Get is answered on the gRPC worker, unless the value is a Key Vault
        reference (then it goes to the loop, to be resolved)."""
        _, value = self._variable(name)
        return None if self.references.applies(value) else {name: value}

    async def _value(self, name: str, variable: str, value: str) -> str:
        if not self.references.applies(value):
            return value
        try:
            return await self.references.resolve(name, value)
        except SecretStoreError as err:
            raise type(err)(f"environment variable {show_name(variable)}: {err.message}") from None

    async def get(self, name: str, version: str | None = None, view: View = DEFAULT_VIEW) -> dict[str, str]:
        variable, value = self._variable(name)
        return {name: await self._value(name, variable, value)}

    async def bulk_get(self, limit: int | None = None, view: View = DEFAULT_VIEW) -> dict[str, dict[str, str]]:
        chosen: list[tuple[str, str, str]] = []
        for variable, value in sorted(os.environ.items()):
            if not variable.startswith(self.prefix) or forbidden(variable) or variable == self.prefix:
                continue
            chosen.append((variable[len(self.prefix):], variable, value))
            if limit is not None and len(chosen) >= limit:
                break
        values = await asyncio.gather(
            *(self._value(name, variable, value) for name, variable, value in chosen), return_exceptions=True
        )
        found: dict[str, dict[str, str]] = {}
        for (name, _, _), outcome in zip(chosen, values, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, SecretStoreError):
                    raise type(outcome)(f"BulkGet stopped at secret {show_name(name)}: {outcome.message}") from None
                raise outcome
            found[name] = {name: outcome}
        return found
