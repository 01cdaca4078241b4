"""`secretbridge check`: validate Component YAMLs offline, before daprd loads them.

It refuses what Init refuses: the same declarations and the same backend `validate` (through
`backends.validate_component`) judge the metadata, every problem of a Component is reported (not
only the first), and so is what daprd itself would refuse or silently skip: two Components with one
name, a misspelled `kind` or `type`. A property given as a `secretKeyRef` (or `envRef`) is one
daprd resolves before Init: it counts as given, and its value is not judged.
Nothing is opened or contacted: a file the YAML names, or a vault, is Init's business.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from secretbridge import backends
from secretbridge.core.errors import SecretStoreError
from secretbridge.core.policy import STRICT, OperatorPolicy

COMPONENT_KIND = "Component"
#: How close a `kind` or `type` must be to the expected one to be taken for a misspelling of it.
_CLOSE = 0.85


@dataclass(frozen=True)
class Problem:
    """One error or warning: the property it is about ("" for the Component as a whole) and the text."""

    prop: str
    text: str


@dataclass
class Finding:
    """What `check` found for one Component (or a file it could not read)."""

    source: str
    component: str
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report: one line for the Component, then one per problem with the file and the property."""
        status = "FAIL" if self.errors else "ok"
        out = [f"{status:<4}  {self.source}: {self.component}"]
        for kind, problems in (("error", self.errors), ("warning", self.warnings)):
            for problem in problems:
                where = f" [{problem.prop}]" if problem.prop else ""
                out.append(f"      {kind}: {self.source}: {self.component}{where}: {problem.text}")
        return out


def yaml_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The YAML files named, and those anywhere under folders named (sorted, each once)."""
    seen: set[Path] = set()
    for path in paths:
        found = (
            sorted(p for p in path.rglob("*") if p.suffix.lower() in (".yaml", ".yml") and p.is_file())
            if path.is_dir()
            else [path]
        )
        for item in found:
            if item.resolve() not in seen:
                seen.add(item.resolve())
                yield item


def _text(value: Any) -> str:
    """A YAML value as the string daprd hands Init."""
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


#: The stand-in value of a property daprd fills from a secret or an environment variable.
FROM_REFERENCE = "from-a-reference"


def component_name(document: dict[str, Any]) -> str:
    """`metadata.name`: the instance name daprd sends in `x-component-instance`."""
    return str((document.get("metadata") or {}).get("name") or "(unnamed)")


def _spec_metadata(document: dict[str, Any]) -> tuple[dict[str, str], list[str], list[Problem]]:
    """`spec.metadata` as the flat map Init receives (a `secretKeyRef` / `envRef` entry holds
    FROM_REFERENCE), the keys daprd resolves, and what is wrong with the document's shape."""
    problems: list[Problem] = []
    spec = document.get("spec") or {}
    version = str(spec.get("version", ""))
    if version not in ("", "v0", "v1"):
        problems.append(
            Problem("spec.version", f"spec.version is {version!r}; daprd registers pluggable stores as v1")
        )
    raw: dict[str, str] = {}
    referenced: list[str] = []
    for item in spec.get("metadata") or []:
        if not isinstance(item, dict) or "name" not in item:
            problems.append(Problem("spec.metadata", "a spec.metadata entry has no name"))
            continue
        key = str(item["name"])
        if "secretKeyRef" in item or "envRef" in item:
            referenced.append(key)  # daprd resolves it before Init: given, value unknown here
            raw[key] = FROM_REFERENCE
            continue
        raw[key] = _text(item.get("value"))
    return raw, referenced, problems


def raw_metadata(document: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """A Component document's `spec.metadata` as the flat map Init receives, and what is wrong with
    its shape. A `secretKeyRef` / `envRef` entry gets the placeholder FROM_REFERENCE."""
    raw, _, problems = _spec_metadata(document)
    return raw, [p.text for p in problems]


def check_component(document: dict[str, Any], source: str, policy: OperatorPolicy = STRICT) -> Finding:
    """Validate one Component document's metadata against its backend's declarations and rules,
    under the operator `policy` `serve` would run with."""
    finding = Finding(source, component_name(document))
    raw, referenced, finding.errors = _spec_metadata(document)
    try:
        valid = backends.validate_component(raw, policy, collect=True, unresolved=referenced)
    except SecretStoreError as err:
        finding.errors.append(Problem("backend", err.message))
        return finding
    finding.errors.extend(Problem(prop, text) for prop, text in valid.errors)
    finding.warnings.extend(Problem(prop, text) for prop, text in valid.warnings)
    return finding


def _documents(path: Path) -> list[Any] | str:
    """The YAML documents of one file, or why it cannot be read."""
    try:
        return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        return f"cannot read it as YAML: {type(err).__name__}"


def component_documents(
    paths: Iterable[Path], socket_name: str = "secretbridge"
) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """(source, document) for every Component of type `secretstores.<socket_name>` in these files
    (folders recursed); (source, why) for a file that cannot be read as YAML."""
    wanted = f"secretstores.{socket_name}".lower()
    for path in yaml_files(paths):
        documents = _documents(path)
        if isinstance(documents, str):
            yield str(path), documents
            continue
        for document in documents:
            if not isinstance(document, dict) or document.get("kind") != COMPONENT_KIND:
                continue
            if str((document.get("spec") or {}).get("type", "")).lower() != wanted:
                continue
            yield str(path), document


def _close_to(text: str, wanted: str) -> bool:
    return difflib.SequenceMatcher(None, text.lower(), wanted.lower()).ratio() >= _CLOSE


def check_paths(
    paths: Iterable[Path], socket_name: str = "secretbridge", policy: OperatorPolicy = STRICT
) -> list[Finding]:
    """Every Component of type `secretstores.<socket_name>` in these files (folders recursed), checked;
    plus findings for near misses of that kind or type and for names given to two Components."""
    wanted = f"secretstores.{socket_name}"
    findings: list[Finding] = []
    # daprd keys Components by namespace and name; a second one with the same name stops it.
    first_seen: dict[tuple[str, str], str] = {}
    for path in yaml_files(paths):
        documents = _documents(path)
        if isinstance(documents, str):
            findings.append(Finding(str(path), "-", errors=[Problem("", documents)]))
            continue
        for document in documents:
            if not isinstance(document, dict):
                continue
            finding = _check_document(document, str(path), wanted, first_seen, policy)
            if finding is not None:
                findings.append(finding)
    return findings


def _check_document(
    document: dict[str, Any],
    source: str,
    wanted: str,
    first_seen: dict[tuple[str, str], str],
    policy: OperatorPolicy,
) -> Finding | None:
    kind = str(document.get("kind") or "")
    kind_type = str((document.get("spec") or {}).get("type") or "")
    meta = document.get("metadata") or {}
    name = str(meta.get("name") or "(unnamed)")
    ours = kind_type.lower() == wanted.lower()
    if kind != COMPONENT_KIND:
        if kind and (ours or _close_to(kind, COMPONENT_KIND)):
            return Finding(source, name, errors=[Problem(
                "kind", f"kind is {kind!r}, which daprd skips; did you mean {COMPONENT_KIND!r}?"
            )])
        return None
    duplicate: Problem | None = None
    key = (str(meta.get("namespace") or ""), name)
    if key in first_seen:
        duplicate = Problem(
            "metadata.name",
            f"another Component is named {name!r} (in {first_seen[key]}); daprd refuses to start with two",
        )
    else:
        first_seen[key] = source
    if not ours:
        problems = [duplicate] if duplicate is not None else []
        if _close_to(kind_type, wanted):
            problems.append(Problem(
                "spec.type", f"spec.type is {kind_type!r}, which no component serves; did you mean {wanted!r}?"
            ))
        return Finding(source, name, errors=problems) if problems else None
    finding = check_component(document, source, policy)
    if duplicate is not None:
        finding.errors.insert(0, duplicate)
    return finding
