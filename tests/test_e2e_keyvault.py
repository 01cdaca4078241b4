"""End to end with the keyvault backend: the same example app as test_e2e_file, only the Component
YAML differs. `secretbridge serve` runs as a real process and reaches the fake Key Vault over HTTPS
with a managed-identity token from the fake identity endpoint (both from tests/fakes)."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

from tests.fakes import FakeKeyVault, FakeManagedIdentity, vault_metadata
from tests.stack import REPO, StackFactory, child_env, http_get

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


def test_an_app_takes_its_tls_identity_from_a_key_vault_certificate_through_daprd(
    fake_vault: FakeKeyVault, e2e_stack: StackFactory, tmp_path: Path
) -> None:
    """Key Vault keeps a client certificate as PKCS#12 and a server certificate as PEM; through the
    real daprd, the app loads the first as one PEM file into `ssl` and completes mutual TLS with a
    server built from the second's `tls.crt`/`tls.key`. Each side trusts only the other's root, so
    the handshake succeeds only if the key, the leaf and the intermediate come in the right order."""
    from cryptography.hazmat.primitives import serialization

    from tests.fakes.pki import make_chain, pem_of

    client, server = make_chain("rsa", name="tls-client"), make_chain("ec", name="tls-server")
    fake_vault.set_certificate("tls-client", client.pkcs12_base64(), content_type="application/x-pkcs12",
                               cer=client.leaf.public_bytes(serialization.Encoding.DER), jwk=client.jwk())
    fake_vault.set_certificate("tls-server", server.pem_bundle(), content_type="application/x-pem-file",
                               cer=server.leaf.public_bytes(serialization.Encoding.DER), jwk=server.jwk())
    only_vault = components(fake_vault).split("\n---\n")[0]
    stack = e2e_stack(only_vault, env=child_env(), runtime="daprd")
    # The server side: the Kubernetes TLS shape, through daprd's HTTP API.
    status, body, _ = http_get(f"{stack.base}/secrets/vault/tls-server?metadata.format=tls")
    assert status == 200, body
    shape = json.loads(body)
    assert sorted(shape) == ["ca.crt", "tls.crt", "tls.key"]
    assert shape["ca.crt"] == pem_of(server.intermediate) + pem_of(server.root)
    status, body, _ = http_get(f"{stack.base}/secrets/vault/tls-client?metadata.objectType=certificate")
    assert status == 200 and json.loads(body) == {"tls-client": pem_of(client.leaf)}
    for name, text in {**shape, "client-root.pem": pem_of(client.root), "server-root.pem": pem_of(server.root)}.items():
        (tmp_path / name).write_text(text)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "client-root.pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
    seen: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(60)

        def serve_one() -> None:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                peer = dict(item[0] for item in tls.getpeercert()["subject"])
                seen.append(str(peer["commonName"]))
                tls.recv(64)
                tls.sendall(b"hello " + seen[-1].encode())

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        app = [sys.executable, str(REPO / "tests" / "apps" / "tls_handshake.py"), "vault", "tls-client",
               f"127.0.0.1:{listener.getsockname()[1]}", str(tmp_path / "server-root.pem")]
        done = subprocess.run(app, env=stack.app_env(), cwd=REPO, capture_output=True, timeout=90, check=False)
        thread.join(60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    outcome = json.loads(done.stdout)
    assert outcome["answer"] == "hello tls-client" and outcome["server"] == "tls-server"
    assert outcome["version"] in ("TLSv1.2", "TLSv1.3")
    assert seen == ["tls-client"]
    assert stack.stop() == (0, 0)
    logs = stack.logs()
    for line in client.key_pem.splitlines()[1:-1] + server.key_pem.splitlines()[1:-1]:
        assert line not in logs
