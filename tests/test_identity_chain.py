"""The identity chain as the built-in store builds it, against the real azure-identity and the fakes.

Each branch: an unavailable credential falls through to the next (ending with the Azure CLI, here a
fake `az` on PATH that prints a token the fake vault accepts); a refusing one stops the chain with
its own error; AZURE_CLIENT_ID picks the user-assigned identity only when the Component names none;
an inline certificate (PEM or base64 PKCS#12) signs the client assertion.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest
import trustme
from azure.keyvault.secrets._shared import http_challenge_cache
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import load_pem_x509_certificate
from secretbridge.backends.contract import CACHE_PROPERTIES
from secretbridge.backends.keyvault import KeyVaultStore
from secretbridge.core.errors import InvalidArgument, PermissionDenied, SecretStoreError, Unavailable
from secretbridge.core.metadata import parse_metadata

from tests.fakes import FakeKeyVault, FakeManagedIdentity, TestCertificates, vault_metadata
from tests.support import TEST_POLICY

pytest_plugins = ("tests.fakes.fixtures",)

TENANT = "3c1d2e4f-0000-4000-8000-00000000abcd"
OpenStore = Callable[[Mapping[str, str]], Awaitable[KeyVaultStore]]


@pytest.fixture
async def open_store() -> AsyncIterator[OpenStore]:
    opened: list[KeyVaultStore] = []

    async def opener(raw: Mapping[str, str]) -> KeyVaultStore:
        metadata = parse_metadata(KeyVaultStore.properties + CACHE_PROPERTIES, raw)
        store = KeyVaultStore(metadata, instance="t", policy=TEST_POLICY)  # the doubles listen on 127.0.0.1
        await store.open()
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


async def failure(call: Awaitable[object]) -> SecretStoreError:
    with pytest.raises(SecretStoreError) as caught:
        await call
    return caught.value


class FakeAz:
    """An `az` on PATH that answers `az account get-access-token` with `token` and logs its arguments."""

    def __init__(self, folder: Path, token: str | None) -> None:
        self.bin = folder / "bin"
        self.bin.mkdir()
        self.log = folder / "az-calls"
        script = self.bin / "az"
        if token is None:
            body = 'echo "Please run \'az login\' to setup account." >&2\nexit 1\n'
        else:
            answer = json.dumps({"accessToken": token, "expires_on": int(time.time()) + 3600,
                                 "expiresOn": "2099-01-01 00:00:00.000000", "tokenType": "Bearer",
                                 "tenant": TENANT})
            body = f"cat <<'EOF'\n{answer}\nEOF\n"
        script.write_text(f'#!/bin/sh\necho "$@" >> {self.log}\n{body}')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    @property
    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def az_dir(tmp_path: Path, azure_env: pytest.MonkeyPatch) -> Path:
    """PATH holds only a folder the test fills (no real `az` is ever run)."""
    folder = tmp_path / "az"
    folder.mkdir()
    azure_env.setenv("PATH", str(folder / "bin") + os.pathsep + "/usr/bin" + os.pathsep + "/bin")
    return folder


@pytest.fixture
def imds_without_identity(azure_env: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A VM-style (IMDS) endpoint with no identity assigned: 400, so the credential is unavailable."""
    with FakeManagedIdentity(system_assigned=False) as identity:
        for name, value in identity.env("imds").items():
            azure_env.setenv(name, value)
        yield identity


async def test_an_unavailable_managed_identity_falls_through_to_the_azure_cli(
    kv_certs: TestCertificates, imds_without_identity: FakeManagedIdentity, az_dir: Path, open_store: OpenStore
) -> None:
    http_challenge_cache.clear()
    with FakeKeyVault(kv_certs, identity=imds_without_identity) as vault:
        az = FakeAz(az_dir, imds_without_identity.tokens.issue("developer@laptop"))
        vault.set_secret("db", "from-the-cli")
        store = await open_store(vault_metadata(vault))
        assert "then the account signed in to the Azure CLI" in store.identity
        assert await store.get("db") == {"db": "from-the-cli"}
        assert [r.status for r in imds_without_identity.requests] == [400]
        (call,) = az.calls
        assert call.startswith("account get-access-token --output json --resource https://vault.azure.net")


async def test_when_every_method_is_unavailable_the_error_names_each(
    kv_certs: TestCertificates, imds_without_identity: FakeManagedIdentity, az_dir: Path, open_store: OpenStore
) -> None:
    http_challenge_cache.clear()
    with FakeKeyVault(kv_certs, identity=imds_without_identity) as vault:
        FakeAz(az_dir, None)  # installed, not signed in
        vault.set_secret("db", "x")
        store = await open_store(vault_metadata(vault, azureAuthMethods="creds,mi,cli"))
        error = await failure(store.get("db"))
        assert isinstance(error, Unavailable)
        assert "azureAuthMethods skipped clientcredentials: azureClientId, azureClientSecret" in error.message
        assert "managedidentity: ManagedIdentityCredential authentication unavailable." in error.message
        assert "commandlineinterface: Please run 'az login'" in error.message


async def test_a_refusing_credential_stops_the_chain_with_its_own_error(
    kv_certs: TestCertificates, azure_env: pytest.MonkeyPatch, az_dir: Path, open_store: OpenStore
) -> None:
    http_challenge_cache.clear()
    with FakeManagedIdentity(certificates=kv_certs, client_secrets={"sp": "right"}) as entra, \
            FakeKeyVault(kv_certs, identity=entra, tenant=TENANT) as vault:
        for name, value in {**entra.env("entra"), **entra.env("imds")}.items():
            azure_env.setenv(name, value)
        az = FakeAz(az_dir, entra.tokens.issue("developer"))
        vault.set_secret("db", "x")
        store = await open_store(vault_metadata(vault, azureTenantId=TENANT, azureClientId="sp",
                                                azureClientSecret="wrong-secret-value"))
        error = await failure(store.get("db"))
        # A wrong secret is a refusal: not silently replaced by the VM's or the developer's identity.
        assert isinstance(error, PermissionDenied), error
        assert "wrong-secret-value" not in error.message
        assert [r.style for r in entra.requests] == ["entra"] and az.calls == []


@pytest.mark.parametrize(
    ("component", "expected"),
    [({}, "from-env"), ({"azureClientId": "from-component"}, "from-component")],
)
async def test_azure_client_id_picks_the_user_assigned_identity_only_when_the_component_names_none(
    fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity, azure_env: pytest.MonkeyPatch,
    open_store: OpenStore, component: dict[str, str], expected: str,
) -> None:
    azure_env.setenv("AZURE_CLIENT_ID", "from-env")
    fake_vault.set_secret("db", "x")
    store = await open_store(vault_metadata(fake_vault, **component))
    assert await store.get("db") == {"db": "x"}
    assert [r.client_id for r in fake_identity.requests] == [expected]


def _client_certificate() -> tuple[bytes, bytes]:
    """(PEM with key and certificate, PKCS#12 of the same with password 'pfx-pass')."""
    leaf = trustme.CA(key_type=trustme.KeyType.RSA).issue_cert("sp-cert", key_type=trustme.KeyType.RSA)
    pem = leaf.private_key_and_cert_chain_pem.bytes()
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    cert = load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    pfx = pkcs12.serialize_key_and_certificates(
        b"sp", key, cert, None, serialization.BestAvailableEncryption(b"pfx-pass")  # type: ignore[arg-type]
    )
    return pem, pfx


@pytest.mark.parametrize("form", ["pem", "pfx"])
async def test_an_inline_certificate_signs_in_the_service_principal(
    kv_certs: TestCertificates, azure_env: pytest.MonkeyPatch, open_store: OpenStore, form: str
) -> None:
    pem, pfx = _client_certificate()
    inline = (
        {"azureCertificate": pem.decode()} if form == "pem"
        else {"spnCertificate": base64.b64encode(pfx).decode(), "azureCertificatePassword": "pfx-pass"}
    )
    http_challenge_cache.clear()
    with FakeManagedIdentity(certificates=kv_certs, certificate_clients={"cert-client"}) as entra, \
            FakeKeyVault(kv_certs, identity=entra, tenant=TENANT) as vault:
        for name, value in entra.env("entra").items():
            azure_env.setenv(name, value)
        vault.set_secret("db", "signed-in")
        store = await open_store(vault_metadata(vault, azureTenantId=TENANT, azureClientId="cert-client",
                                                azureAuthMethods="cert", **inline))
        assert store.identity == "the service principal with client id cert-client (certificate)"
        assert await store.get("db") == {"db": "signed-in"}
        (request,) = entra.requests
        assert request.client_id == "cert-client" and request.status == 200


@pytest.mark.parametrize(
    ("inline", "error"),
    [("not a certificate at all!", InvalidArgument), (base64.b64encode(b"garbage").decode(), SecretStoreError)],
)
async def test_an_unusable_inline_certificate_is_refused_naming_the_property(
    azure_env: pytest.MonkeyPatch, open_store: OpenStore, inline: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        await open_store({"vaultName": "kv1", "azureTenantId": TENANT, "azureClientId": "c",
                          "azureCertificate": inline})
    message = str(caught.value)
    assert "'azureCertificate'" in message and inline not in message


async def test_a_wrong_pkcs12_password_is_refused_without_echoing_it(
    azure_env: pytest.MonkeyPatch, open_store: OpenStore
) -> None:
    _, pfx = _client_certificate()
    with pytest.raises(SecretStoreError) as caught:
        await open_store({"vaultName": "kv1", "azureTenantId": TENANT, "azureClientId": "c",
                          "azureCertificate": base64.b64encode(pfx).decode(),
                          "azureCertificatePassword": "not-the-pfx-password"})
    message = str(caught.value)
    assert "'azureCertificate'" in message and "not-the-pfx-password" not in message
