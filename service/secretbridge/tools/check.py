"""`secretbridge check`: validate Component YAMLs offline, before daprd loads them.

The same declarations that validate `Init` check the files, so a typo in a property name, a
malformed duration or a missing `secretsFile` is found in CI rather than at a pod's start-up.
Nothing is opened or contacted: a file the YAML names, or a vault, is Init's business.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from secretbridge import backends as stores
from secretbridge.core.errors import SecretStoreError
from secretbridge.core.policy import STRICT, OperatorPolicy

#: The stand-in value of a property daprd fills from a secret or an environment variable.
FROM_REFERENCE = "from-a-reference"


@dataclass
class Finding:
    """What `check` found for one Component (or a file it could not read)."""

    source: str
    component: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def yaml_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The YAML files named, and those inside folders named (not recursing, as daprd does not)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix.lower() in (".yaml", ".yml"))
        else:
            yield path


def raw_metadata(document: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """A Component document's `spec.metadata` as the flat map Init receives, and what is wrong with
    its shape. A `secretKeyRef` / `envRef` entry gets a placeholder: daprd resolves it."""
    errors: list[str] = []
    spec = document.get("spec") or {}
    version = str(spec.get("version", ""))
    if version not in ("", "v0", "v1"):
        errors.append(f"spec.version is {version!r}; daprd registers pluggable stores as v1")
    raw: dict[str, str] = {}
    for item in spec.get("metadata") or []:
        if not isinstance(item, dict) or "name" not in item:
            errors.append("a spec.metadata entry has no name")
            continue
        if "secretKeyRef" in item or "envRef" in item:
            raw[str(item["name"])] = FROM_REFERENCE  # daprd resolves it; only the name is checked here
            continue
        value = item.get("value", "")
        raw[str(item["name"])] = "true" if value is True else "false" if value is False else str(value)
    return raw, errors


def component_name(document: dict[str, Any]) -> str:
    """`metadata.name`: the instance name daprd sends in `x-component-instance`."""
    return str((document.get("metadata") or {}).get("name") or "(unnamed)")


def check_component(document: dict[str, Any], source: str, policy: OperatorPolicy = STRICT) -> Finding:
    """Validate one Component document's metadata against its backend's declarations, under the
    operator `policy` `serve` would run with."""
    finding = Finding(source, component_name(document))
    raw, finding.errors = raw_metadata(document)
    try:
        valid = stores.validate_component(raw, policy)
    except SecretStoreError as err:
        finding.errors.append(err.message)
        return finding
    finding.warnings.extend(text for _, text in valid.warnings)
    return finding


def component_documents(
    paths: Iterable[Path], socket_name: str = "secretbridge"
) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """(source, document) for every Component of type `secretstores.<socket_name>` in these files;
    (source, why) for a file that cannot be read as YAML."""
    wanted = f"secretstores.{socket_name}".lower()
    for path in yaml_files(paths):
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            yield str(path), f"cannot read it as YAML: {type(err).__name__}"
            continue
        for document in documents:
            if not isinstance(document, dict) or document.get("kind") != "Component":
                continue
            if str((document.get("spec") or {}).get("type", "")).lower() != wanted:
                continue
            yield str(path), document


def check_paths(
    paths: Iterable[Path], socket_name: str = "secretbridge", policy: OperatorPolicy = STRICT
) -> list[Finding]:
    """Every Component of type `secretstores.<socket_name>` in these files, checked."""
    findings: list[Finding] = []
    for source, document in component_documents(paths, socket_name):
        if isinstance(document, str):
            findings.append(Finding(source, "-", errors=[document]))
        else:
            findings.append(check_component(document, source, policy))
    return findings
