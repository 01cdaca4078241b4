"""Key Vault references left in the environment (App Service's unresolved app settings), resolved by the
`env` backend through the instance's identity against the fake vault, over the real socket."""

from __future__ import annotations

from urllib.parse import urlsplit

import grpc
import pytest
from secretbridge.backends import validate_component
from secretbridge.backends.env import EnvStore
from secretbridge.core.errors import NotFound

from tests.fakes import FakeKeyVault, FakeManagedIdentity
from tests.support import Bridge
from tests.test_containerapps import code_of

pytest_plugins = ("tests.fakes.fixtures",)


def uri_ref(vault: FakeKeyVault, name: str, version: str | None = None) -> str:
    tail = f"/{version}" if version else ""
    return f"@Microsoft.KeyVault(SecretUri={vault.url}/secrets/{name}{tail})"


def init(bridge: Bridge, vault: FakeKeyVault, **extra: str) -> None:
    bridge.init({
        "backend": "env",
        "prefix": "SBREF_",
        "keyVaultReferenceHosts": urlsplit(vault.url).netloc,
        "maxRetries": "0",
        **extra,
    })


def test_references_resolve_on_get_and_bulk_get_and_the_literal_is_never_served(
    bridge: Bridge, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = fake_vault.set_secret("db-password", "vault-value-1")
    fake_vault.set_secret("db-password", "vault-value-2")
    monkeypatch.setenv("SBREF_DB", uri_ref(fake_vault, "db-password"))
    monkeypatch.setenv("SBREF_PINNED", uri_ref(fake_vault, "db-password", first))
    monkeypatch.setenv("SBREF_PLAIN", "just-a-value")
    init(bridge, fake_vault, azureClientId="app-uami")
    assert bridge.get("DB") == {"DB": "vault-value-2"}
    assert bridge.get("PINNED") == {"PINNED": "vault-value-1"}
    assert bridge.get("PLAIN") == {"PLAIN": "just-a-value"}
    assert bridge.bulk_get() == {
        "DB": {"DB": "vault-value-2"}, "PINNED": {"PINNED": "vault-value-1"}, "PLAIN": {"PLAIN": "just-a-value"},
    }
    # Through the Component's identity.
    assert {r.client_id for r in fake_identity.requests} == {"app-uami"}


@pytest.mark.parametrize(
    ("value", "code", "words"),
    [
        ("missing", grpc.StatusCode.NOT_FOUND, "secret 'absent' in Key Vault"),
        ("elsewhere", grpc.StatusCode.PERMISSION_DENIED, "not a Key Vault host"),
        ("malformed", grpc.StatusCode.FAILED_PRECONDITION, "malformed Key Vault reference"),
    ],
)
def test_an_unresolvable_reference_is_an_error_naming_the_variable_and_the_secret(
    bridge: Bridge, fake_vault: FakeKeyVault, monkeypatch: pytest.MonkeyPatch,
    value: str, code: grpc.StatusCode, words: str,
) -> None:
    literal = {
        "missing": uri_ref(fake_vault, "absent"),
        "elsewhere": "@Microsoft.KeyVault(SecretUri=https://attacker.example:8443/secrets/db)",
        "malformed": "@Microsoft.KeyVault(SecretUri=not a uri)",
    }[value]
    monkeypatch.setenv("SBREF_API_KEY", literal)
    init(bridge, fake_vault)
    got, message = code_of(lambda: bridge.get("API_KEY"))
    assert got == code
    assert "environment variable 'SBREF_API_KEY'" in message and words in message
    assert literal not in message
    bulk_code, bulk_message = code_of(lambda: bridge.bulk_get())
    assert bulk_code == code and "'API_KEY'" in bulk_message


def test_resolution_can_be_turned_off(
    bridge: Bridge, fake_vault: FakeKeyVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    literal = uri_ref(fake_vault, "db-password")
    monkeypatch.setenv("SBREF_DB", literal)
    init(bridge, fake_vault, resolveKeyVaultReferences="false")
    assert bridge.get("DB") == {"DB": literal}
    assert fake_vault.count("get") == 0


class RecordingResolver:
    """A stand-in for the runtime's resolver (the contract's ReferenceResolver), recording the keys."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str | None]] = []

    async def get(self, name: str, version: str | None = None) -> dict[str, str]:
        self.asked.append((name, version))
        if name.endswith("/gone"):
            raise NotFound("secret 'gone' was not found in Key Vault 'kv1'")
        return {name: "resolved"}


async def test_the_vault_name_form_names_the_vault_of_the_component_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBVN_A", "@Microsoft.KeyVault(VaultName=kv1;SecretName=db;SecretVersion=abc123)")
    monkeypatch.setenv("SBVN_B", "@Microsoft.KeyVault(VaultName=kv1;SecretName=gone)")
    valid = validate_component({"backend": "env", "prefix": "SBVN_", "azureEnvironment": "AzureChinaCloud"})
    assert valid.cls.wants_resolver(valid.metadata)
    resolver = RecordingResolver()
    store = EnvStore(valid.metadata, instance="t", resolver=resolver)
    assert await store.get("A") == {"A": "resolved"}
    assert resolver.asked == [("https://kv1.vault.azure.cn/secrets/db", "abc123")]
    with pytest.raises(NotFound) as caught:
        await store.get("B")
    message = caught.value.message
    assert message.startswith("environment variable 'SBVN_B': secret 'B' is a Key Vault reference to secret "
                              "'gone' in Key Vault 'kv1' that cannot be resolved: ")
