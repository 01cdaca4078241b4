"""Component / Configuration YAML loading and daprd's secret-scope precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
from secretbridge.gateway.components import (
    ResourceError,
    SecretKeyRef,
    load_components,
    load_configuration,
)
from secretbridge.gateway.scopes import SecretScope, build_scopes, is_allowed

MULTI = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: first
  namespace: team-a
spec:
  type: secretstores.secretbridge
  version: v1
  initTimeout: 2s
  ignoreErrors: true
  metadata:
    - name: backend
      value: file
    - name: multiValued
      value: true
    - name: port
      value: 8080
    - name: password
      secretKeyRef:
        name: db
        key: pw
    - name: token
      envRef: MY_TOKEN
auth:
  secretStore: other
scopes: [app1]
---
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: cfg
spec: {}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: second
spec:
  type: state.redis
  version: v1
---
apiVersion: other.io/v1
kind: Component
metadata:
  name: foreign
spec:
  type: secretstores.secretbridge
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_several_documents_per_file_and_only_components_kept(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", MULTI)
    components = load_components([tmp_path])
    assert [c.name for c in components] == ["first", "second"]
    first = components[0]
    assert first.namespace == "team-a"
    assert first.type == "secretstores.secretbridge"
    assert first.version == "v1"
    assert first.init_timeout == "2s"
    assert first.ignore_errors is True
    assert first.auth_secret_store == "other"
    assert first.scopes == ("app1",)
    assert first.references_secrets
    items = {item.name: item for item in first.metadata}
    # YAML booleans and numbers reach Init as daprd renders them.
    assert items["multiValued"].value == "true"
    assert items["port"].value == "8080"
    assert items["password"].secret_key_ref == SecretKeyRef(name="db", key="pw")
    assert items["token"].env_ref == "MY_TOKEN"
    assert not components[1].references_secrets


def test_bad_files_are_skipped_and_others_load(tmp_path: Path) -> None:
    write(tmp_path, "0-broken.yaml", "kind: [unclosed\n")
    write(tmp_path, "1-noname.yml", "apiVersion: dapr.io/v1alpha1\nkind: Component\nspec: {type: x}\n")
    write(tmp_path, "2-good.yml", MULTI.split("---")[2])
    write(tmp_path, "notes.txt", "not yaml at all: [")
    assert [c.name for c in load_components([tmp_path])] == ["second"]


def test_a_duplicate_component_name_is_refused_as_daprd_refuses_it(tmp_path: Path) -> None:
    write(tmp_path, "2-good.yml", MULTI.split("---")[2])
    write(tmp_path, "3-dup.yaml", MULTI.split("---")[2])
    with pytest.raises(ResourceError, match="duplicate definition of Component name second"):
        load_components([tmp_path])


def test_missing_resources_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match="does not exist"):
        load_components([tmp_path / "nope"])


def test_configuration_scopes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "config.yaml",
        MULTI.split("---")[0]
        + """---
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
spec:
  secrets:
    scopes:
      - storeName: s1
        defaultAccess: DENY
        allowedSecrets: [a]
      - storeName: s2
        deniedSecrets: [b]
""",
    )
    config = load_configuration(path)
    assert config.name == "appconfig"
    assert config.secret_scopes["s1"].default_access == "deny"
    assert config.secret_scopes["s1"].allowed_secrets == frozenset({"a"})
    assert config.secret_scopes["s2"].denied_secrets == frozenset({"b"})


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        ("[{storeName: s, defaultAccess: maybe}]", "allow or deny"),
        ("[{storeName: s}, {storeName: s}]", "more than once"),
        ("[{defaultAccess: allow}]", "storeName"),
    ],
)
def test_invalid_configuration_is_refused(tmp_path: Path, scopes: str, message: str) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        f"apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {{name: c}}\n"
        f"spec:\n  secrets:\n    scopes: {scopes}\n",
    )
    with pytest.raises(ResourceError, match=message):
        load_configuration(path)


def test_configuration_file_without_configuration(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match="no Configuration"):
        load_configuration(write(tmp_path, "c.yaml", MULTI.split("---")[2]))


def test_scope_precedence_matches_daprd() -> None:
    # allowedSecrets non-empty wins over everything, including deniedSecrets and defaultAccess.
    allow_list = SecretScope(
        "s", default_access="deny", allowed_secrets=frozenset({"a", "b"}), denied_secrets=frozenset({"a"})
    )
    assert allow_list.allows("a") and allow_list.allows("b") and not allow_list.allows("c")
    # Then deniedSecrets, then defaultAccess.
    deny_list = SecretScope("s", default_access="allow", denied_secrets=frozenset({"x"}))
    assert not deny_list.allows("x") and deny_list.allows("y")
    default_deny = SecretScope("s", default_access="deny")
    assert not default_deny.allows("anything")
    # Exact, case-sensitive matching.
    assert not SecretScope("s", allowed_secrets=frozenset({"Key"})).allows("key")


def test_store_without_scope_entry_allows_everything() -> None:
    scopes = build_scopes([{"storeName": "s", "defaultAccess": "deny"}])
    assert not is_allowed(scopes, "s", "k")
    assert is_allowed(scopes, "other", "k")
