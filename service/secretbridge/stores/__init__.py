"""The backends, looked up by their `metadata.backend` name.

Stores are imported on first use, so an instance that serves local files never
pays for importing the Azure SDK.
"""

from __future__ import annotations

import importlib

from secretbridge.errors import InvalidArgument
from secretbridge.stores.base import SecretStore

_BACKENDS: dict[str, str] = {
    "file": "secretbridge.stores.file:FileStore",
    "env": "secretbridge.stores.env:EnvStore",
    "keyvault": "secretbridge.stores.keyvault:KeyVaultStore",
    "containerapps": "secretbridge.stores.containerapps:ContainerAppsStore",
}


def backend_names() -> tuple[str, ...]:
    """Every backend name, in the order the docs list them."""
    return tuple(_BACKENDS)


def store_class(backend: str) -> type[SecretStore]:
    """The store class for a `metadata.backend` value (case-insensitive)."""
    target = _BACKENDS.get(backend.strip().lower())
    if target is None:
        raise InvalidArgument(
            f"metadata property 'backend' must be one of {', '.join(_BACKENDS)}; got {backend!r}"
        )
    module_name, _, class_name = target.partition(":")
    cls: type[SecretStore] = getattr(importlib.import_module(module_name), class_name)
    return cls
