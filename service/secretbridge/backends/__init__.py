"""The backends, looked up by their `metadata.backend` name.

Stores are imported on first use, so an instance that serves local files never
pays for importing the Azure SDK.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from secretbridge.backends.contract import CACHE_PROPERTIES, SecretStore, cache_warnings
from secretbridge.core.errors import InvalidArgument
from secretbridge.core.metadata import Kind, MetadataErrors, ParsedMetadata, Property, parse_metadata
from secretbridge.core.policy import STRICT, OperatorPolicy

_BACKENDS: dict[str, str] = {
    "file": "secretbridge.backends.file:FileStore",
    "env": "secretbridge.backends.env:EnvStore",
    "keyvault": "secretbridge.backends.keyvault:KeyVaultStore",
    "containerapps": "secretbridge.backends.containerapps:ContainerAppsStore",
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


COMMON_PROPERTIES: tuple[Property, ...] = (
    Property(
        "backend",
        "Which store serves this Component.",
        required=True,
        choices=tuple(_BACKENDS),
    ),
    Property(
        "allowedSecrets",
        "Comma-separated names this instance may serve; when set, every other name is refused "
        "and left out of bulk reads (defence in depth beside daprd's secret scopes).",
        Kind.LIST,
        default=(),
    ),
    Property(
        "deniedSecrets",
        "Comma-separated names this instance never serves, not even in bulk reads.",
        Kind.LIST,
        default=(),
    ),
)


def properties_for(cls: type[SecretStore]) -> tuple[Property, ...]:
    """Every property a Component selecting this backend may set."""
    extra = CACHE_PROPERTIES if cls.remote else ()
    return (*COMMON_PROPERTIES, *cls.properties, *extra)


@dataclass(frozen=True)
class Validated:
    """A Component's metadata and what its backend's offline rules said of it."""

    cls: type[SecretStore]
    metadata: ParsedMetadata
    #: (property, text): unknown properties and the backend's own warnings (property "" when none).
    warnings: tuple[tuple[str, str], ...]
    #: (property, text) of every rule broken; only in `collect` mode (otherwise they are raised).
    errors: tuple[tuple[str, str], ...] = ()


def validate_component(
    raw: Mapping[str, str],
    policy: OperatorPolicy = STRICT,
    *,
    collect: bool = False,
    unresolved: Iterable[str] = (),
) -> Validated:
    """Pick the backend, decode the metadata and run the backend's `validate`: what Init and
    `secretbridge check` both do before anything is opened. Raises `InvalidArgument` naming the
    property; unknown properties come back as warnings (daprd's own metadata may grow). `policy` is
    what the operator allowed `serve` (the strict default when not said).

    `collect` (for `check`): every problem is returned in `errors` instead of the first being
    raised. `unresolved`: keys daprd resolves before Init (`secretKeyRef`); given, value unknown.
    """
    backend = next((v for k, v in raw.items() if k.lower() == "backend"), None)
    if backend is None or not backend.strip():
        raise InvalidArgument("metadata property 'backend' is required: one of " + ", ".join(backend_names()))
    if any(k.lower() == "backend" for k in unresolved):
        raise InvalidArgument(
            "metadata property 'backend' must be a plain value (it picks the store), not a secretKeyRef"
        )
    cls = store_class(backend)
    metadata = parse_metadata(properties_for(cls), raw, collect=collect, unresolved=unresolved)
    warnings = [
        (
            key,
            f"unknown metadata property '{key}' is ignored"
            + (f"; did you mean '{metadata.suggestions[key]}'?" if key in metadata.suggestions else ""),
        )
        for key in metadata.unknown
    ]
    warnings += list(metadata.warnings)
    if cls.remote:
        warnings += cache_warnings(metadata)
    errors = list(metadata.errors)
    try:
        warnings += [("", text) for text in cls.validate(metadata, policy)]
    except InvalidArgument as err:
        if not collect:
            raise
        errors += err.problems if isinstance(err, MetadataErrors) else [("", err.message)]
    return Validated(cls, metadata, tuple(warnings), tuple(errors))
