"""`env`: secrets from this process's environment, e.g. Container Apps `secretRef` variables.

Like Dapr's local.env, `prefix` is prepended on the way in and stripped from
bulk names. Unlike it, an unknown name is NOT_FOUND (local.env answers an empty
value, which an app cannot tell from a real empty secret), and the sidecar's own
credentials are never served: `DAPR_*`, `APP_API_TOKEN`, and the managed-identity
and service-principal variables the Azure SDK reads.
"""

from __future__ import annotations

import os
from typing import ClassVar

from secretbridge.backends.contract import SecretStore
from secretbridge.core.errors import NotFound, PermissionDenied
from secretbridge.core.metadata import ParsedMetadata, Property
from secretbridge.core.names import show_name
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
    )

    @classmethod
    def validate(cls, metadata: ParsedMetadata, policy: OperatorPolicy = STRICT) -> list[str]:
        """Warns when `prefix` selects only variables this store never serves."""
        prefix = str(metadata.get("prefix") or "")
        if metadata.known("prefix") and prefix.upper().startswith("DAPR_"):
            return [f"metadata property 'prefix' is {prefix!r}: DAPR_* variables are never served, so this "
                    "Component serves nothing"]
        return []

    @property
    def prefix(self) -> str:
        return str(self.metadata["prefix"])

    def read_now(self, name: str, version: str | None = None) -> dict[str, str]:
        """os.environ is memory: every Get is answered on the gRPC worker."""
        variable = self.prefix + name
        if forbidden(variable):
            raise PermissionDenied(
                f"environment variable {show_name(variable)} belongs to Dapr or to this sidecar's identity "
                "and is never served"
            )
        value = os.environ.get(variable)
        if value is None:
            raise NotFound(f"secret {show_name(name)} not found: no environment variable {show_name(variable)}")
        return {name: value}

    async def get(self, name: str, version: str | None = None) -> dict[str, str]:
        return self.read_now(name, version)

    async def bulk_get(self, limit: int | None = None) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for variable, value in sorted(os.environ.items()):
            if not variable.startswith(self.prefix) or forbidden(variable) or variable == self.prefix:
                continue
            name = variable[len(self.prefix):]
            found[name] = {name: value}
            if limit is not None and len(found) >= limit:
                break
        return found
