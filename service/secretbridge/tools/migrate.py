"""`secretbridge migrate`: rewrite Components of Dapr's built-in stores into secretbridge Components.

`secretstores.azure.keyvault`, `secretstores.local.file` and `secretstores.local.env` become
`secretstores.<socket name>` with a `backend` entry first in `spec.metadata`; every other field is kept
as it is (secretbridge accepts the built-in stores' property names and aliases), comments, order and
quoting included (ruamel.yaml's round trip; documents that change nothing are kept byte for byte). A
property secretbridge does not understand is kept too, and reported.

The catalogue here (the built-in stores' properties and every intentional difference) is also what
docs/migration.md shows: a test keeps the two in step and checks every property listed is one the
backends' declarations accept, unless a difference says it is not.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secretbridge.backends import properties_for, store_class
from secretbridge.core.metadata import FALSY, TRUTHY


@dataclass(frozen=True)
class BuiltinProperty:
    """One property of a built-in store, as components-contrib spells it."""

    name: str
    aliases: tuple[str, ...] = ()
    #: "component" (spec.metadata) or "request" (request metadata on a Get or BulkGet).
    where: str = "component"
    #: The id of the difference that says why secretbridge does not accept it (empty: accepted).
    unsupported: str = ""


def _has(*names: str) -> Callable[[Mapping[str, str]], bool]:
    wanted = {n.lower() for n in names}
    return lambda md: any(k.lower() in wanted for k in md)


def _true(name: str) -> Callable[[Mapping[str, str]], bool]:
    return lambda md: any(k.lower() == name.lower() and v.strip().lower() in TRUTHY for k, v in md.items())


def _always(_: Mapping[str, str]) -> bool:
    return True


@dataclass(frozen=True)
class Difference:
    """Something a Component behaves differently in after the move, on purpose."""

    id: str
    builtin: str
    secretbridge: str
    #: When it applies, in words (the docs), and as a test on the Component's metadata (the report).
    when_text: str = "always"
    when: Callable[[Mapping[str, str]], bool] = field(default=_always, compare=False)


@dataclass(frozen=True)
class BuiltinStore:
    """A built-in store: its type, the backend that replaces it, its properties and differences."""

    type: str
    backend: str
    properties: tuple[BuiltinProperty, ...]
    differences: tuple[Difference, ...]


def _relative_file(md: Mapping[str, str]) -> bool:
    return any(k.lower() == "secretsfile" and not os.path.isabs(v.strip()) for k, v in md.items())


def _odd_bool(md: Mapping[str, str]) -> bool:
    """A value some boolean property holds that is neither Dapr-truthy nor -falsy (read as false by Dapr)."""
    booleans = {"multivalued", "failfast"}
    return any(k.lower() in booleans and v.strip().lower() not in TRUTHY | FALSY and v.strip() for k, v in md.items())


def _vault_host_and_cloud(md: Mapping[str, str]) -> bool:
    lowered = {k.lower(): v.strip().lower() for k, v in md.items()}
    host = lowered.get("vaultname", "")
    return "." in host and ("azureenvironment" in lowered or "azurecloud" in lowered)


def _empty_alias(md: Mapping[str, str]) -> bool:
    groups = [("azureclientid", "spnclientid", "clientid"), ("azuretenantid", "spntenantid", "tenantid"),
              ("azureclientsecret", "spnclientsecret", "clientsecret")]
    lowered = {k.lower(): v for k, v in md.items()}
    return any(sum(1 for n in group if n in lowered) > 1 and any(not lowered.get(n, "x").strip() for n in group)
               for group in groups)


COMMON_DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "process",
        "runs inside daprd: reads daprd's files and environment, relative paths from daprd's working folder",
        "runs in the secretbridge container: files, environment variables and relative paths are the "
        "secretbridge container's, so mount the file or set the variables there",
    ),
    Difference(
        "strict-booleans",
        "any text that is not truthy (`1`, `t`, `true`, `y`, `yes`, `on`) is false",
        "the opposites (`0`, `f`, `false`, `n`, `no`, `off`) are false and other text fails Init naming the "
        "property",
        "when a boolean property holds other text",
        _odd_bool,
    ),
    Difference(
        "error-text",
        "errors are the Go SDK's or the store's text",
        "errors carry a gRPC code and a message naming the secret, the store and the cause; an app that parses "
        "error text sees other words",
    ),
    Difference(
        "unknown-properties",
        "unknown properties are ignored silently",
        "unknown properties are ignored with a warning at Init (and by `secretbridge check`), with a "
        "close match suggested",
        "when a property is not one secretbridge understands",
    ),
)

KEYVAULT = BuiltinStore(
    type="secretstores.azure.keyvault",
    backend="keyvault",
    properties=(
        BuiltinProperty("vaultName"),
        BuiltinProperty("azureEnvironment", ("azureCloud",)),
        BuiltinProperty("azureTenantId", ("spnTenantId", "tenantId")),
        BuiltinProperty("azureClientId", ("spnClientId", "clientId")),
        BuiltinProperty("azureClientSecret", ("spnClientSecret", "clientSecret")),
        BuiltinProperty("azureCertificate", ("spnCertificate",)),
        BuiltinProperty("azureCertificateFile", ("spnCertificateFile",)),
        BuiltinProperty("azureCertificatePassword", ("spnCertificatePassword",)),
        BuiltinProperty(
            "azureAuthMethods", ("azureADAuthMethods", "entraIDAuthMethods", "microsoftEntraIDAuthMethods")
        ),
        BuiltinProperty("azureDisableInstanceDiscovery", unsupported="kv-instance-discovery"),
        BuiltinProperty("version_id", where="request"),
        BuiltinProperty("maxresults", where="request"),
    ),
    differences=(
        Difference(
            "kv-cache",
            "every Get and BulkGet reads the vault",
            "values are cached per instance for `cacheTTL` (default 30s; served stale up to `maxStale` when the "
            "vault is down): a new version is seen within cacheTTL. `cacheTTL: \"0\"` reads the vault every time",
        ),
        Difference(
            "kv-maxresults",
            "`maxresults` is checked after each page of 25, so the answer may hold up to a page more",
            "`maxresults` is exact; listing stops once that many are known",
        ),
        Difference(
            "kv-bulk-vanished",
            "a secret deleted or disabled between the listing and its read fails the whole BulkGet",
            "it is left out, as if it had not been listed",
        ),
        Difference(
            "kv-names",
            "a name Key Vault cannot hold (`_`, `.`, over 127 characters) is sent to the vault, which refuses it",
            "it is refused before any call with INVALID_ARGUMENT saying why (`nameMapping: dashes` maps `_` "
            "and `.` to `-`)",
        ),
        Difference(
            "kv-certificate",
            "an unreadable or undecodable certificate silently drops that method from the chain",
            "it fails Init naming `azureCertificateFile` or `azureCertificate`",
            "when a certificate is given",
            _has("azureCertificate", "spnCertificate", "azureCertificateFile", "spnCertificateFile"),
        ),
        Difference(
            "kv-vault-host",
            "a `vaultName` host in one cloud overrides `azureEnvironment` naming another",
            "the conflict fails Init naming `vaultName`",
            "when vaultName is a host and azureEnvironment is set",
            _vault_host_and_cloud,
        ),
        Difference(
            "kv-empty-alias",
            "the first spelling present wins even when its value is empty",
            "an empty value counts as not set, so the next spelling is used",
            "when two spellings of one property are given and one is empty",
            _empty_alias,
        ),
        Difference(
            "kv-instance-discovery",
            "`azureDisableInstanceDiscovery` turns off Microsoft Entra instance discovery for workload identity",
            "not understood (kept, warned about at Init): azure-identity's workload identity makes no "
            "instance-discovery call",
            "when azureDisableInstanceDiscovery is set",
            _has("azureDisableInstanceDiscovery"),
        ),
        Difference(
            "kv-spiffe",
            "`azureAuthMethods` may list `spiffe` (SPIFFE workload identity)",
            "refused at Init with a message saying SPIFFE is not supported",
            "when azureAuthMethods lists spiffe",
            lambda md: any("spiffe" in v.lower() for k, v in md.items() if k.lower().endswith("authmethods")),
        ),
        Difference(
            "kv-azure-client-id",
            "without `azureClientId`, managed identity is the system-assigned one even when `AZURE_CLIENT_ID` "
            "is set",
            "`AZURE_CLIENT_ID` in secretbridge's environment picks the user-assigned identity (the Azure SDK "
            "convention); `azureClientId` still wins over it",
            "when azureClientId is not set",
            lambda md: not any(k.lower() in ("azureclientid", "spnclientid", "clientid") and v.strip()
                               for k, v in md.items()),
        ),
        Difference(
            "kv-probe",
            "off a cloud service, managed identity gets a 1 s timeout until it answers once, the Azure CLI 30 s",
            "an IMDS managed identity in a chain is probed for 1 s first (azure-identity), the Azure CLI gets 10 s",
        ),
    ),
)

FILE = BuiltinStore(
    type="secretstores.local.file",
    backend="file",
    properties=(
        BuiltinProperty("secretsFile"),
        BuiltinProperty("nestedSeparator"),
        BuiltinProperty("multiValued"),
    ),
    differences=(
        Difference(
            "file-scalars",
            "numbers, booleans and null are printed with Go's `%s`: `5` becomes `%!s(float64=5)`",
            "they are served as their JSON text: `5`, `true`, `null`",
            "when the file holds numbers, booleans or null",
        ),
        Difference(
            "file-yaml",
            "JSON only",
            "JSON, or YAML (`.yaml`/`.yml`, or when the text is not JSON); a JSON file means the same",
        ),
        Difference(
            "file-reload",
            "read once at Init",
            "re-read when it changes; a change that does not parse is logged and the last good content served",
        ),
        Difference(
            "file-relative",
            "a relative `secretsFile` resolves against daprd's working folder",
            "against secretbridge's working folder",
            "when secretsFile is a relative path",
            _relative_file,
        ),
        Difference(
            "file-multivalued",
            "with `multiValued`, top-level numbers, booleans and arrays are dropped",
            "they are served: scalars as `{name: value}`, arrays as indexed members",
            "when multiValued is true",
            _true("multiValued"),
        ),
        Difference(
            "file-maxresults",
            "`maxresults` is ignored",
            "`maxresults` limits BulkGet (0 or less: no limit; text that is not a whole number fails the call)",
        ),
    ),
)

ENV = BuiltinStore(
    type="secretstores.local.env",
    backend="env",
    properties=(BuiltinProperty("prefix"),),
    differences=(
        Difference(
            "env-missing",
            "an unknown name answers 200 with an empty value",
            "NOT_FOUND naming the variable, so an app can tell a missing secret from an empty one",
        ),
        Difference(
            "env-forbidden",
            "`DAPR_*` and `APP_API_TOKEN` answer an empty value (logged); identity variables are served",
            "`DAPR_*`, `APP_API_TOKEN` and the identity variables (`IDENTITY_HEADER`, `MSI_SECRET`, "
            "`AZURE_CLIENT_SECRET`, ...) are refused with PERMISSION_DENIED and left out of BulkGet",
        ),
        Difference(
            "env-references",
            "a value `@Microsoft.KeyVault(...)` (an App Service reference it could not resolve) is served as "
            "that text",
            "it is resolved through the instance's identity; an unresolvable one is an error naming the "
            "variable and the secret (`resolveKeyVaultReferences: \"false\"` serves the text)",
        ),
        Difference(
            "env-maxresults",
            "`maxresults` is ignored",
            "`maxresults` limits BulkGet (0 or less: no limit; text that is not a whole number fails the call)",
        ),
    ),
)

BUILTIN_STORES: tuple[BuiltinStore, ...] = (KEYVAULT, FILE, ENV)
_BY_TYPE = {store.type: store for store in BUILTIN_STORES}


def accepted(store: BuiltinStore, spelling: str) -> bool:
    """Whether the backend replacing `store` declares this spelling (as a name or an alias)."""
    cls = store_class(store.backend)
    return any(spelling.lower() in (p.name.lower(), *(a.lower() for a in p.aliases)) for p in properties_for(cls))


def markdown_tables() -> str:
    """The tables docs/migration.md shows, generated from the catalogue (a test keeps them in step)."""
    lines: list[str] = []
    for store in BUILTIN_STORES:
        lines += [
            f"### `{store.type}` → `backend: {store.backend}`\n",
            "| built-in property | aliases | where | secretbridge |",
            "|---|---|---|---|",
        ]
        for prop in store.properties:
            aliases = ", ".join(f"`{a}`" for a in prop.aliases)
            ours = f"not understood: see `{prop.unsupported}`" if prop.unsupported else "same name and meaning"
            lines.append(f"| `{prop.name}` | {aliases} | {prop.where} | {ours} |")
        lines.append("")
        lines += ["| difference | when | built-in store | secretbridge |", "|---|---|---|---|"]
        for diff in store.differences:
            lines.append(f"| `{diff.id}` | {diff.when_text} | {diff.builtin} | {diff.secretbridge} |")
        lines.append("")
    lines += [
        "### Every store\n",
        "| difference | when | built-in store | secretbridge |",
        "|---|---|---|---|",
    ]
    for diff in COMMON_DIFFERENCES:
        lines.append(f"| `{diff.id}` | {diff.when_text} | {diff.builtin} | {diff.secretbridge} |")
    return "\n".join(lines) + "\n"


# -- rewriting ------------------------------------------------------------------------------------


@dataclass
class Migrated:
    """One Component rewritten: what changed, what was kept unknown, which differences apply."""

    component: str
    builtin: str
    changes: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)


@dataclass
class FileResult:
    """One file: its new text (None when nothing changed) and a report per Component."""

    path: Path
    text: str | None
    components: list[Migrated] = field(default_factory=list)
    error: str = ""


_DOCUMENT_SPLIT = re.compile(r"(?m)^---[ \t]*(?:#.*)?\n")


def _indentation(text: str) -> tuple[int, int]:
    """(mapping indent, block sequence offset) as the document writes them, so a rewrite keeps its look."""
    lines = text.splitlines()
    mapping = next((len(m.group(1)) for line in lines if (m := re.match(r"^( +)[^\s#-]", line))), 2)
    offset = 0
    for i, line in enumerate(lines):
        dash = re.match(r"^( *)- ", line)
        if dash is None:
            continue
        for parent in reversed(lines[:i]):
            key = re.match(r"^( *)[^\s#-][^:]*:\s*(#.*)?$", parent)
            if key is not None:
                offset = max(len(dash.group(1)) - len(key.group(1)), 0)
                break
        break
    return mapping, offset


def _flat(items: Iterable[Any]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for item in items:
        if isinstance(item, Mapping) and "name" in item:
            value = item.get("value", "")
            flat[str(item["name"])] = "from-a-reference" if "value" not in item else str(value)
    return flat


def migrate_document(document: Any, socket_name: str) -> Migrated | None:
    """Rewrite one loaded (round-trip) Component in place; None when it is not a built-in store's."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if not isinstance(document, MutableMapping) or document.get("kind") != "Component":
        return None
    spec = document.get("spec")
    if not isinstance(spec, MutableMapping):
        return None
    builtin = _BY_TYPE.get(str(spec.get("type", "")).strip().lower())
    if builtin is None:
        return None
    name = str((document.get("metadata") or {}).get("name") or "(unnamed)")
    result = Migrated(name, builtin.type)
    new_type = f"secretstores.{socket_name}"
    spec["type"] = new_type
    result.changes.append(f"spec.type: {builtin.type} -> {new_type}")
    if "version" not in spec:
        spec["version"] = "v1"
        result.changes.append("spec.version: v1 added (daprd registers pluggable stores as v1)")
    items = spec.get("metadata")
    if items is None:
        items = CommentedSeq()
        spec["metadata"] = items
    entry = CommentedMap()
    entry["name"] = "backend"
    entry["value"] = builtin.backend
    items.insert(0, entry)
    result.changes.append(f"spec.metadata: backend: {builtin.backend} added")
    flat = _flat(items)
    for key in flat:
        if key.lower() == "backend":
            continue
        if not accepted(builtin, key):
            unsupported = next((p.unsupported for p in builtin.properties if p.name.lower() == key.lower()), "")
            why = f"see difference {unsupported}" if unsupported else "not a property of this store"
            result.kept.append(f"{key}: kept as it is; secretbridge ignores it ({why})")
    result.differences = [
        d for d in (*builtin.differences, *COMMON_DIFFERENCES)
        if d.when(flat) and (d.id != "unknown-properties" or result.kept)
    ]
    return result


def migrate_text(text: str, socket_name: str = "secretbridge") -> tuple[str | None, list[Migrated]]:
    """The rewritten text (None when no Component changed) and a report per migrated Component."""
    from ruamel.yaml import YAML

    parts = _DOCUMENT_SPLIT.split(text)
    separators = _DOCUMENT_SPLIT.findall(text)
    reports: list[Migrated] = []
    changed = False
    out: list[str] = []
    for index, part in enumerate(parts):
        yaml = YAML()
        yaml.preserve_quotes = True
        yaml.width = 4096
        mapping, offset = _indentation(part)
        yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
        document = yaml.load(part) if part.strip() else None
        report = migrate_document(document, socket_name)
        if report is None:
            out.append(part)
        else:
            buffer = io.StringIO()
            yaml.dump(document, buffer)
            out.append(buffer.getvalue())
            reports.append(report)
            changed = True
        if index < len(separators):
            out.append(separators[index])
    return ("".join(out) if changed else None), reports


def migrate_paths(paths: Iterable[Path], socket_name: str = "secretbridge") -> list[FileResult]:
    """Every YAML file named (and those directly inside folders named), migrated in memory."""
    from ruamel.yaml.error import YAMLError

    from secretbridge.tools.check import yaml_files

    results: list[FileResult] = []
    for path in yaml_files(paths):
        try:
            text, reports = migrate_text(path.read_text(encoding="utf-8"), socket_name)
        except (OSError, UnicodeDecodeError, YAMLError) as err:
            results.append(FileResult(path, None, error=f"cannot read it as YAML: {type(err).__name__}"))
            continue
        results.append(FileResult(path, text, reports))
    return results


def report_lines(result: FileResult) -> list[str]:
    """What `secretbridge migrate` prints about one file."""
    if result.error:
        return [f"{result.path}: FAIL {result.error}"]
    if not result.components:
        return [f"{result.path}: nothing to migrate (no {', '.join(s.type for s in BUILTIN_STORES)} Component)"]
    lines: list[str] = []
    for component in result.components:
        lines.append(f"{result.path}: Component '{component.component}' ({component.builtin})")
        lines += [f"  changed: {change}" for change in component.changes]
        lines += [f"  kept: {kept}" for kept in component.kept]
        for diff in component.differences:
            lines.append(f"  differs [{diff.id}]: built-in: {diff.builtin}; secretbridge: {diff.secretbridge}")
    lines.append("  (every difference: docs/migration.md)")
    return lines


__all__ = [
    "BUILTIN_STORES",
    "COMMON_DIFFERENCES",
    "BuiltinProperty",
    "BuiltinStore",
    "Difference",
    "FileResult",
    "Migrated",
    "accepted",
    "markdown_tables",
    "migrate_paths",
    "migrate_text",
    "report_lines",
]
