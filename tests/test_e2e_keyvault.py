"""End to end with the keyvault backend: the same example app as test_e2e_file, only the Component
YAML differs. `secretbridge serve` runs as a real process and reaches the fake Key Vault over HTTPS
with a managed-identity token from the fake identity endpoint (both from tests/fakes)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fakes import FakeKeyVault, FakeManagedIdentity, vault_metadata
from tests.stack import StackFactory, child_env, http_get

pytest_plugins = ("tests.fakes.fixtures",)

CONFIG = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
spec:
  secrets:
    scopes:
      - storeName: vault
        deniedSecrets: [internal-only]
"""


def components(vault: FakeKeyVault) -> str:
    metadata = {"backend": "keyvault", **vault_metadata(vault)}
    items = "\n".join(f"    - name: {k}\n      value: {json.dumps(v)}" for k, v in metadata.items())
    return f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: vault
spec:
  type: secretstores.secretbridge
  version: v1
  metadata:
{items}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: appsecrets
spec:
  type: secretstores.secretbridge
  version: v1
  metadata:
    - name: backend
      value: file
    - name: secretsFile
      secretKeyRef:
        name: app-secrets-path
auth:
  secretStore: vault
"""


def test_keyvault_through_gateway_with_the_sdk(
    fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity, e2e_stack: StackFactory
) -> None:
    values = {"db-password": "kv-db-VALUE-1", "api-key": "kv-api-VALUE-2", "internal-only": "kv-int-VALUE-3"}
    for name, value in values.items():
        fake_vault.set_secret(name, value)
    fake_vault.set_secret("retired", "kv-old-VALUE-4", enabled=False)

    def prepare(folder: Path) -> None:
        fake_vault.set_secret("app-secrets-path", str(folder / "app.json"))

    # The fixtures put the identity endpoint and SSL_CERT_FILE (test CA) in os.environ.
    stack = e2e_stack(components(fake_vault), CONFIG, env=child_env(), prepare=prepare,
                      files={"app.json": json.dumps({"flag": "kv-flag-VALUE-5"})})
    folder = stack.folder
    out = stack.app("vault", "db-password", "internal-only", "nope")
    get = out["grpc"]["get"]
    assert get["db-password"] == {"data": {"db-password": "kv-db-VALUE-1"}}
    assert out["http"]["get"]["db-password"] == {"status": 200, "body": {"db-password": "kv-db-VALUE-1"}}
    assert get["internal-only"]["code"] == "PERMISSION_DENIED"
    assert out["http"]["get"]["internal-only"]["status"] == 403
    assert get["nope"]["code"] == "INTERNAL"
    assert "rpc error: code = NotFound desc = " in get["nope"]["details"]
    assert out["http"]["get"]["nope"]["body"]["errorCode"] == "ERR_SECRET_GET"
    # Bulk skips the disabled secret and the denied one.
    bulk = {
        "db-password": {"db-password": "kv-db-VALUE-1"},
        "api-key": {"api-key": "kv-api-VALUE-2"},
        "app-secrets-path": {"app-secrets-path": str(folder / "app.json")},
    }
    assert out["grpc"]["bulk"] == {"data": bulk}
    assert out["http"]["bulk"] == {"status": 200, "body": bulk}
    # secretKeyRef resolved through the Key Vault store before the file store's Init.
    assert stack.app("appsecrets", "flag")["grpc"]["get"]["flag"] == {"data": {"flag": "kv-flag-VALUE-5"}}
    status, body, _ = http_get(f"{stack.base}/metadata")
    assert status == 200
    meta = {c["name"]: c for c in json.loads(body)["components"]}
    assert meta["appsecrets"]["resolvedMetadata"]["secretKeyRef"] == ["secretsFile"]
    assert fake_identity.requests
    assert stack.stop() == (0, 0)
    logs = stack.logs()
    for secret in [*values.values(), "kv-old-VALUE-4", "kv-flag-VALUE-5", fake_identity.identity_header]:
        assert secret not in logs
