"""Load Dapr Component and Configuration documents from YAML, as daprd does from disk.

A resources folder holds `*.yaml` / `*.yml` files; each may carry several
documents. Only `kind: Component` documents become components; other kinds
(Configuration, Resiliency, Subscription, ...) are ignored there. A file that
does not parse is skipped with a warning, as daprd's loader does, so one bad
file does not hide the others.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from secretbridge.gateway.scopes import SecretScope, build_scopes

log = logging.getLogger("secretbridge.gateway.components")

API_VERSION = "dapr.io/v1alpha1"
_YAML_SUFFIXES = (".yaml", ".yml")
#: daprd's default component init timeout.
DEFAULT_INIT_TIMEOUT = "5s"


class ResourceError(ValueError):
    """A resource file or document that cannot be used at all (the message names it)."""


@dataclass(frozen=True)
class SecretKeyRef:
    """`secretKeyRef` of a metadata item: which secret, and which key of it."""

    name: str
    key: str = ""


@dataclass(frozen=True)
class MetadataItem:
    """One `spec.metadata` entry: a plain value, a secret reference or an env reference."""

    name: str
    value: str = ""
    secret_key_ref: SecretKeyRef | None = None
    env_ref: str = ""


@dataclass(frozen=True)
class Component:
    """A `kind: Component` document, reduced to what the secrets API needs."""

    name: str
    type: str
    version: str = ""
    namespace: str = ""
    metadata: tuple[MetadataItem, ...] = ()
    auth_secret_store: str = ""
    init_timeout: str = DEFAULT_INIT_TIMEOUT
    ignore_errors: bool = False
    scopes: tuple[str, ...] = ()
    source: str = ""

    @property
    def references_secrets(self) -> bool:
        """Whether any metadata item needs a secret store before Init."""
        return any(item.secret_key_ref is not None for item in self.metadata)


@dataclass(frozen=True)
class Configuration:
    """A `kind: Configuration` document; only `spec.secrets.scopes` matters here."""

    name: str
    secret_scopes: dict[str, SecretScope] = field(default_factory=dict)


def _scalar(value: Any) -> str:
    """Render a YAML scalar the way daprd's DynamicValue does (booleans lower-case)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    # A map or list as a value: daprd keeps the JSON text of it.
    return json.dumps(value, separators=(",", ":"))


def _metadata_item(raw: Any, where: str) -> MetadataItem:
    if not isinstance(raw, dict) or not raw.get("name"):
        raise ResourceError(f"{where}: every spec.metadata entry needs a name")
    name = str(raw["name"])
    ref = raw.get("secretKeyRef")
    secret_key_ref = None
    if isinstance(ref, dict) and ref.get("name"):
        secret_key_ref = SecretKeyRef(name=str(ref["name"]), key=_scalar(ref.get("key")))
    return MetadataItem(
        name=name,
        value=_scalar(raw.get("value")),
        secret_key_ref=secret_key_ref,
        env_ref=_scalar(raw.get("envRef")),
    )


def parse_component(doc: dict[str, Any], source: str = "") -> Component:
    """Build a `Component` from one parsed YAML document of kind Component."""
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    name = str(meta.get("name") or "").strip()
    where = f"{source or 'component'}"
    if not name:
        raise ResourceError(f"{where}: a Component needs metadata.name")
    where = f"{where} (component {name!r})"
    ctype = str(spec.get("type") or "").strip()
    if not ctype:
        raise ResourceError(f"{where}: spec.type is required")
    items = spec.get("metadata") or []
    if not isinstance(items, list):
        raise ResourceError(f"{where}: spec.metadata must be a list")
    auth = doc.get("auth") or {}
    scopes = doc.get("scopes") or []
    return Component(
        name=name,
        type=ctype,
        version=_scalar(spec.get("version")).strip(),
        namespace=str(meta.get("namespace") or ""),
        metadata=tuple(_metadata_item(item, where) for item in items),
        auth_secret_store=str(auth.get("secretStore") or "") if isinstance(auth, dict) else "",
        init_timeout=_scalar(spec.get("initTimeout")) or DEFAULT_INIT_TIMEOUT,
        ignore_errors=_scalar(spec.get("ignoreErrors")).lower() == "true",
        scopes=tuple(str(s) for s in scopes) if isinstance(scopes, list) else (),
        source=source,
    )


def parse_configuration(doc: dict[str, Any], source: str = "") -> Configuration:
    """Build a `Configuration`; invalid secret scopes raise `ResourceError` (daprd refuses them too)."""
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    secrets = spec.get("secrets") or {}
    raw_scopes = (secrets.get("scopes") or []) if isinstance(secrets, dict) else []
    try:
        scopes = build_scopes(raw_scopes)
    except ValueError as exc:
        raise ResourceError(f"{source or 'configuration'}: {exc}") from None
    return Configuration(name=str(meta.get("name") or ""), secret_scopes=scopes)


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict):
            yield doc


def _is_kind(doc: dict[str, Any], kind: str) -> bool:
    return str(doc.get("kind") or "") == kind and str(doc.get("apiVersion") or "") == API_VERSION


def resource_files(paths: Iterable[str | Path]) -> list[Path]:
    """The YAML files of each resources folder (not recursive, sorted), or the file itself."""
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _YAML_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise ResourceError(f"resources path {str(path)!r} does not exist")
    return files


def load_components(paths: Sequence[str | Path]) -> list[Component]:
    """Every valid Component in the resources paths; a name defined twice is a `ResourceError`."""
    components: list[Component] = []
    seen: dict[str, str] = {}
    for file in resource_files(paths):
        try:
            docs = list(_documents(file))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            log.warning(
                "skipping a resource file that cannot be read as YAML",
                extra={"file": str(file), "cause": type(exc).__name__},
            )
            continue
        for doc in docs:
            if not _is_kind(doc, "Component"):
                continue
            try:
                component = parse_component(doc, str(file))
            except ResourceError as exc:
                log.warning("skipping an invalid Component", extra={"file": str(file), "cause": str(exc)})
                continue
            if component.name in seen:
                # daprd's loader refuses to start on this, so the gateway does too.
                raise ResourceError(
                    f"duplicate definition of Component name {component.name} ({component.type}/"
                    f"{component.version}) in {file}; the first is in {seen[component.name]}"
                )
            seen[component.name] = str(file)
            components.append(component)
    return components


def load_configuration(path: str | Path) -> Configuration:
    """The first `kind: Configuration` document of a file (`--config`); raise if there is none."""
    file = Path(path)
    try:
        docs = list(_documents(file))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ResourceError(f"cannot read configuration {str(file)!r}: {type(exc).__name__}") from None
    for doc in docs:
        if _is_kind(doc, "Configuration"):
            return parse_configuration(doc, str(file))
    raise ResourceError(f"{str(file)!r} holds no Configuration document (apiVersion {API_VERSION})")
