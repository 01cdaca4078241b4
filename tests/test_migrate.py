"""`secretbridge migrate` and docs/migration.md: the rewrite keeps every field and comment, reports what
applies, and the doc's tables stay the catalogue's, whose every property the declarations accept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from secretbridge.core.names import bulk_options, get_options
from secretbridge.tools.check import check_paths
from secretbridge.tools.migrate import BUILTIN_STORES, COMMON_DIFFERENCES, accepted, markdown_tables, migrate_text

from tests.support import Bridge

ROOT = Path(__file__).resolve().parent.parent

KEYVAULT_YAML = """\
# The production vault, read by the app's managed identity.
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: azurekeyvault   # apps call /v1.0/secrets/azurekeyvault/<name>
  namespace: default
spec:
  type: secretstores.azure.keyvault
  version: v1
  metadata:
  - name: vaultName
    value: "contoso-prod"   # the vault
  # The user-assigned identity
  - name: azureClientId
    value: 00000000-0000-0000-0000-000000000000
  - name: spnClientSecret
    secretKeyRef:
      name: sp
      key: secret
  - name: azureDisableInstanceDiscovery
    value: "true"
auth:
  secretStore: kubernetes
"""

OTHER_YAML = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
    name: statestore
spec:
    type: state.redis   # not a secret store: left alone, spacing and all
    version: v1
    metadata: []
"""


def _items(document: dict) -> dict[str, object]:  # type: ignore[type-arg]
    return {item["name"]: item.get("value", item.get("secretKeyRef")) for item in document["spec"]["metadata"]}


def test_the_docs_show_the_catalogue() -> None:
    assert markdown_tables() in (ROOT / "docs" / "migration.md").read_text()


def test_every_built_in_property_is_accepted_or_a_listed_difference() -> None:
    common = {d.id for d in COMMON_DIFFERENCES}
    for store in BUILTIN_STORES:
        ids = {d.id for d in store.differences}
        assert not ids & common and len(ids) == len(store.differences), store.type
        for prop in store.properties:
            if prop.where == "request":
                continue
            for spelling in (prop.name, *prop.aliases):
                if prop.unsupported:
                    assert prop.unsupported in ids and not accepted(store, spelling), (store.type, spelling)
                else:
                    assert accepted(store, spelling), f"{store.type}: {spelling} is listed but not accepted"
    # The request metadata the built-in Key Vault store reads means the same here.
    assert get_options({"version_id": "abc"}, supports_versions=True, backend="keyvault").version == "abc"
    assert bulk_options({"maxresults": "0"}).limit is None and bulk_options({"maxresults": "7"}).limit == 7


def test_a_key_vault_component_is_rewritten_keeping_every_field_and_comment() -> None:
    text, (report,) = migrate_text(KEYVAULT_YAML + "---\n" + OTHER_YAML)
    assert text is not None
    before, other = text.split("---\n")
    assert other == OTHER_YAML  # byte for byte
    for comment in ("# The production vault", "# apps call", "# the vault", "# The user-assigned identity"):
        assert comment in before
    assert '"contoso-prod"' in before  # quoting kept
    document = yaml.safe_load(before)
    original = yaml.safe_load(KEYVAULT_YAML)
    assert document["spec"]["type"] == "secretstores.secretbridge" and document["spec"]["version"] == "v1"
    assert document["spec"]["metadata"][0] == {"name": "backend", "value": "keyvault"}
    assert _items(document) == {"backend": "keyvault", **_items(original)}
    assert document["auth"] == original["auth"] and document["metadata"] == original["metadata"]
    assert report.changes == [
        "spec.type: secretstores.azure.keyvault -> secretstores.secretbridge",
        "spec.metadata: backend: keyvault added",
    ]
    assert [k.split(":")[0] for k in report.kept] == ["azureDisableInstanceDiscovery"]
    ids = [d.id for d in report.differences]
    assert "kv-instance-discovery" in ids and "unknown-properties" in ids and "kv-certificate" not in ids
    # Already migrated: nothing more to do.
    assert migrate_text(text) == (None, [])


def test_the_rewritten_component_passes_check(tmp_path: Path) -> None:
    text, _ = migrate_text(KEYVAULT_YAML)
    (tmp_path / "vault.yaml").write_text(text or "")
    (finding,) = check_paths([tmp_path])
    assert not finding.errors, finding.errors
    assert [w for w in finding.warnings if "azureDisableInstanceDiscovery" in w.text]


def test_differences_are_reported_only_where_they_apply() -> None:
    def ids(metadata: str) -> list[str]:
        doc = (f"kind: Component\nmetadata: {{name: s}}\nspec:\n  type: secretstores.local.file\n"
               f"  metadata:\n{metadata}")
        _, (report,) = migrate_text(doc)
        return [d.id for d in report.differences]

    relative = ids("  - {name: secretsFile, value: secrets.json}\n  - {name: multiValued, value: 'on'}\n")
    assert "file-relative" in relative and "file-multivalued" in relative and "strict-booleans" not in relative
    absolute = ids("  - {name: secretsFile, value: /etc/s.json}\n  - {name: multiValued, value: 'enabled'}\n")
    assert "file-relative" not in absolute and "file-multivalued" not in absolute and "strict-booleans" in absolute
    assert "file-scalars" in absolute and "process" in absolute


def test_migrate_prints_by_default_and_writes_with_write(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "env.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: envs\nspec:\n"
        "  type: secretstores.local.env\n  version: v1\n  metadata:\n    - name: prefix\n      value: APP_\n"
    )
    (folder / "redis.yaml").write_text(OTHER_YAML)
    command = [sys.executable, "-m", "secretbridge", "migrate", str(folder)]
    shown = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    assert "type: secretstores.secretbridge" in shown.stdout and "differs [env-missing]" in shown.stderr
    assert "redis.yaml: nothing to migrate" in shown.stderr
    assert "secretstores.local.env" in (folder / "env.yaml").read_text()  # untouched without --write
    written = subprocess.run([*command, "--write"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "rewritten:" in written.stdout
    migrated = yaml.safe_load((folder / "env.yaml").read_text())
    assert migrated["spec"]["metadata"] == [{"name": "backend", "value": "env"}, {"name": "prefix", "value": "APP_"}]
    assert (folder / "redis.yaml").read_text() == OTHER_YAML


def test_a_migrated_local_file_component_serves_what_the_built_in_served(bridge: Bridge, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"db": {"user": "app", "password": "pw"}, "plain": "v"}))
    text, _ = migrate_text(
        "kind: Component\nmetadata: {name: local}\nspec:\n  type: secretstores.local.file\n  version: v1\n"
        f"  metadata:\n  - name: secretsFile\n    value: {secrets}\n  - name: nestedSeparator\n    value: '.'\n"
    )
    metadata = {item["name"]: str(item["value"]) for item in yaml.safe_load(text or "")["spec"]["metadata"]}
    bridge.init(metadata)
    assert bridge.get("db.password") == {"db.password": "pw"}
    assert bridge.bulk_get() == {"db.user": {"db.user": "app"}, "db.password": {"db.password": "pw"},
                                 "plain": {"plain": "v"}}
