"""Secret scopes (`Configuration.spec.secrets.scopes`), decided the way daprd decides them.

Precedence for one store: a non-empty `allowedSecrets` allows exactly those
names and nothing else; otherwise a name in `deniedSecrets` is denied;
otherwise `defaultAccess` (allow unless it says deny). A store with no scope
entry allows everything. Matching is exact and case-sensitive. The secrets
API checks Get before calling the store, and filters BulkGet afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ALLOW = "allow"
DENY = "deny"


@dataclass(frozen=True)
class SecretScope:
    """The scope entry of one secret store."""

    store_name: str
    default_access: str = ALLOW
    allowed_secrets: frozenset[str] = frozenset()
    denied_secrets: frozenset[str] = frozenset()

    def allows(self, key: str) -> bool:
        """daprd's `IsSecretAllowed` for this store."""
        if self.allowed_secrets:
            return key in self.allowed_secrets
        if key in self.denied_secrets:
            return False
        return self.default_access != DENY


def build_scopes(raw: Iterable[Any]) -> dict[str, SecretScope]:
    """Validate the YAML `scopes` list and index it by store name.

    Raises `ValueError` for a repeated store name or a `defaultAccess` other
    than allow/deny (any case), which daprd refuses at load as well.
    """
    scopes: dict[str, SecretScope] = {}
    for entry in raw:
        if not isinstance(entry, Mapping):
            raise ValueError("each secrets.scopes entry must be a mapping")
        store = str(entry.get("storeName") or "")
        if not store:
            raise ValueError("a secrets.scopes entry needs storeName")
        if store in scopes:
            raise ValueError(f"secrets.scopes names store {store!r} more than once")
        access = str(entry.get("defaultAccess") or ALLOW).lower()
        if access not in (ALLOW, DENY):
            raise ValueError(f"secrets.scopes defaultAccess for store {store!r} must be allow or deny, got {access!r}")
        scopes[store] = SecretScope(
            store_name=store,
            default_access=access,
            allowed_secrets=frozenset(str(s) for s in entry.get("allowedSecrets") or ()),
            denied_secrets=frozenset(str(s) for s in entry.get("deniedSecrets") or ()),
        )
    return scopes


def is_allowed(scopes: Mapping[str, SecretScope], store: str, key: str) -> bool:
    """Whether `key` of `store` may be read; no entry for the store means allowed."""
    scope = scopes.get(store)
    return True if scope is None else scope.allows(key)
