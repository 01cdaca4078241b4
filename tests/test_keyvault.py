"""The keyvault store on its own: the real azure SDK against the fakes over HTTPS."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import pytest
from secretbridge.azure.budget import MAX_THROTTLED_RESENDS
from secretbridge.azure.identity import AuthMethod, build_credential, describe_identity, select_auth_method
from secretbridge.azure.redaction import redact
from secretbridge.azure.references import SecretRef, parse_reference, parse_secret_uri
from secretbridge.backends.contract import CACHE_PROPERTIES
from secretbridge.backends.keyvault import KeyVaultStore
from secretbridge.core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    IdentityRefused,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SecretStoreError,
    Unavailable,
)
from secretbridge.core.metadata import parse_metadata

from tests.fakes import FakeKeyVault, FakeManagedIdentity, vault_metadata
from tests.support import TEST_POLICY

# The fakes' fixtures (kv_certs, azure_env, fake_identity, fake_vault).
pytest_plugins = ("tests.fakes.fixtures",)

OpenStore = Callable[[Mapping[str, str]], Awaitable[KeyVaultStore]]


def parse(raw: Mapping[str, str]):  # type: ignore[no-untyped-def]
    return parse_metadata(KeyVaultStore.properties + CACHE_PROPERTIES, raw)


def make(raw: Mapping[str, str]) -> KeyVaultStore:
    return KeyVaultStore(parse(raw), instance="test", policy=TEST_POLICY)


@pytest.fixture
async def open_store() -> AsyncIterator[OpenStore]:
    opened: list[KeyVaultStore] = []

    async def opener(raw: Mapping[str, str]) -> KeyVaultStore:
        store = make(raw)
        await store.open()
        opened.append(store)
        return store

    yield opener
    for store in opened:
        await store.close()


async def expect(error: type[SecretStoreError], call: Awaitable[object]) -> str:
    with pytest.raises(error) as caught:
        await call
    assert type(caught.value) is error
    return caught.value.message


# -- metadata ---------------------------------------------------------------------------------------


def test_exactly_one_of_vault_name_and_uri() -> None:
    for raw in ({}, {"vaultName": "a-vault", "vaultUri": "https://x.vault.azure.net"}):
        with pytest.raises(InvalidArgument, match="vaultName' and 'vaultUri"):
            make(raw)


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ({"vaultName": "myvault"}, "https://myvault.vault.azure.net"),
        ({"vaultName": "myvault", "azureEnvironment": "AzureChina"}, "https://myvault.vault.azure.cn"),
        ({"vaultName": "myvault", "azureEnvironment": "azureusgovernmentcloud"},
         "https://myvault.vault.usgovcloudapi.net"),
        ({"vaultName": "MyVault.vault.azure.cn"}, "https://myvault.vault.azure.cn"),
        # The vault's URL as the portal shows it, with or without the trailing slash.
        ({"vaultName": "https://myvault.vault.azure.net/"}, "https://myvault.vault.azure.net"),
        ({"vaultName": "https://myvault.vault.usgovcloudapi.net"}, "https://myvault.vault.usgovcloudapi.net"),
        ({"vaultUri": "https://127.0.0.1:8443/"}, "https://127.0.0.1:8443"),
        ({"vaultUri": "https://myvault.vault.azure.net"}, "https://myvault.vault.azure.net"),
    ],
)
def test_vault_url(raw: dict[str, str], url: str) -> None:
    assert make(raw).vault_url == url


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"vaultUri": "http://127.0.0.1:8443"}, "vaultUri"),
        ({"vaultUri": "https://127.0.0.1:8443/secrets"}, "vaultUri"),
        ({"vaultUri": "https://user:pw@127.0.0.1"}, "vaultUri"),
        ({"vaultUri": "https://127.0.0.1:99999"}, "vaultUri"),
        ({"vaultName": "my_vault"}, "vaultName"),
        ({"vaultName": "x"}, "vaultName"),
        ({"vaultName": "myvault.vault.azure.cn", "azureEnvironment": "AzurePublicCloud"}, "vaultName"),
        ({"vaultName": "myvault", "azureEnvironment": "Mars"}, "azureEnvironment"),
        ({"vaultName": "myvault", "disableChallengeResourceVerification": "true"},
         "disableChallengeResourceVerification"),
        ({"vaultUri": "https://v.vault.azure.net", "disableChallengeResourceVerification": "true"},
         "disableChallengeResourceVerification"),
        ({"vaultName": "myvault", "keyPrefix": "prod_"}, "keyPrefix"),
        ({"vaultName": "myvault", "nameMapping": "slashes"}, "nameMapping"),
        ({"vaultName": "myvault", "bulkConcurrency": "0"}, "bulkConcurrency"),
        ({"vaultName": "myvault", "maxRetries": "-1"}, "maxRetries"),
        ({"vaultName": "myvault", "multiValued": "sometimes"}, "multiValued"),
        ({"vaultName": "https://127.0.0.1:8443"}, "vaultName"),
    ],
)
def test_bad_metadata_names_the_property(raw: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        make(raw)
    assert f"'{field}'" in caught.value.message


def test_dapr_aliases_are_understood() -> None:
    metadata = parse({"vaultName": "kv1", "spnClientId": "cid", "spnTenantId": "tid", "azureCloud": "AzureChina"})
    assert metadata["azureClientId"] == "cid" and metadata["azureTenantId"] == "tid"
    assert KeyVaultStore(metadata, instance="x").vault_url == "https://kv1.vault.azure.cn"


def test_secret_values_in_metadata_are_not_echoed() -> None:
    with pytest.raises(InvalidArgument) as caught:
        make({"vaultName": "kv1", "azureAuthMethod": "s3cr3t-value-in-wrong-field"})
    assert "'azureAuthMethod'" in caught.value.message
    # Two aliases of a secret: the first wins, and the warning names the spellings, not the values.
    metadata = parse({"vaultName": "kv1", "clientSecret": "value-two", "azureClientSecret": "value-one"})
    assert metadata["azureClientSecret"] == "value-one"
    (warning,) = [text for prop, text in metadata.warnings if prop == "azureClientSecret"]
    assert "'azureClientSecret' is used" in warning and "value-" not in warning


# -- identity selection -----------------------------------------------------------------------------


APP_SERVICE = {"IDENTITY_ENDPOINT": "http://x", "IDENTITY_HEADER": "h"}
WORKLOAD = {"AZURE_FEDERATED_TOKEN_FILE": "/t", "AZURE_CLIENT_ID": "c-2", "AZURE_TENANT_ID": "t"}
CLI_WORDS = "the account signed in to the Azure CLI (az login)"


@pytest.mark.parametrize(
    ("raw", "env", "method", "words"),
    [
        ({}, APP_SERVICE, AuthMethod.MANAGED_IDENTITY, "the system-assigned managed identity"),
        ({"azureClientId": "c-1"}, APP_SERVICE, AuthMethod.MANAGED_IDENTITY,
         "the user-assigned managed identity with client id c-1"),
        # AZURE_CLIENT_ID picks the user-assigned identity when the Component names none ...
        ({}, {**APP_SERVICE, "AZURE_CLIENT_ID": "c-env"}, AuthMethod.MANAGED_IDENTITY,
         "the user-assigned managed identity with client id c-env (from AZURE_CLIENT_ID)"),
        # ... and never overrides the one it names.
        ({"azureClientId": "c-1"}, {**APP_SERVICE, "AZURE_CLIENT_ID": "c-env"}, AuthMethod.MANAGED_IDENTITY,
         "the user-assigned managed identity with client id c-1"),
        # Off a cloud service the built-in's chain ends with the Azure CLI.
        ({}, {}, AuthMethod.MANAGED_IDENTITY,
         f"the first that answers of the system-assigned managed identity, then {CLI_WORDS}"),
        # Workload identity takes its client id from the environment, as the built-in does.
        ({"azureClientId": "c-meta"}, {**WORKLOAD, **APP_SERVICE}, AuthMethod.WORKLOAD_IDENTITY,
         "the first that answers of the workload identity with client id c-2, then the user-assigned "
         "managed identity with client id c-meta"),
        ({"azureClientId": "c-3", "azureTenantId": "t", "azureClientSecret": "s"}, APP_SERVICE,
         AuthMethod.CLIENT_CREDENTIALS,
         "the first that answers of the service principal with client id c-3 (client secret), then the "
         "user-assigned managed identity with client id c-3"),
        # Client credentials need all three; two of them are not a method.
        ({"azureClientId": "c-3", "azureClientSecret": "s"}, APP_SERVICE, AuthMethod.MANAGED_IDENTITY,
         "the user-assigned managed identity with client id c-3"),
        ({"azureAuthMethods": "creds, MI"}, APP_SERVICE, AuthMethod.MANAGED_IDENTITY,
         "the system-assigned managed identity (azureAuthMethods skipped clientcredentials: azureClientId, "
         "azureClientSecret, azureTenantId not set)"),
        ({"entraIDAuthMethods": "cli"}, APP_SERVICE, AuthMethod.CLI, CLI_WORDS),
        ({"microsoftEntraIDAuthMethods": "wi,mi"}, WORKLOAD, AuthMethod.WORKLOAD_IDENTITY,
         "the first that answers of the workload identity with client id c-2, then the user-assigned "
         "managed identity with client id c-2 (from AZURE_CLIENT_ID)"),
        # The deprecated singular property still works.
        ({"azureAuthMethod": "ManagedIdentity"}, WORKLOAD,
         AuthMethod.MANAGED_IDENTITY, "the user-assigned managed identity with client id c-2 (from AZURE_CLIENT_ID)"),
        ({"azureAuthMethod": "environment"}, {"AZURE_CLIENT_SECRET": "s", "AZURE_CLIENT_ID": "c-4"},
         AuthMethod.ENVIRONMENT, "the service principal from the environment (AZURE_CLIENT_ID c-4)"),
        # azureAuthMethods wins over it.
        ({"azureAuthMethod": "environment", "azureAuthMethods": "mi"}, APP_SERVICE,
         AuthMethod.MANAGED_IDENTITY, "the system-assigned managed identity"),
    ],
)
def test_auth_method_selection(raw: dict[str, str], env: dict[str, str], method: AuthMethod, words: str) -> None:
    metadata = parse({"vaultName": "kv1", **raw})
    assert select_auth_method(metadata, env) is method
    assert describe_identity(metadata, env) == words


def test_forced_methods_need_their_fields() -> None:
    with pytest.raises(InvalidArgument, match=r"'azureAuthMethod'.*azureTenantId"):
        build_credential(parse({"vaultName": "kv1", "azureAuthMethod": "clientsecret"}), environ={})
    with pytest.raises(InvalidArgument, match="AZURE_FEDERATED_TOKEN_FILE"):
        build_credential(parse({"vaultName": "kv1", "azureAuthMethod": "workloadidentity"}), environ={})
    # Each listed method is named with why it cannot be used.
    with pytest.raises(InvalidArgument) as caught:
        build_credential(parse({"vaultName": "kv1", "azureAuthMethods": "creds,cert,wi"}), environ={})
    message = caught.value.message
    assert "clientcredentials: azureClientId, azureClientSecret, azureTenantId not set" in message
    assert "clientcertificate: azureCertificateFile or azureCertificate" in message
    assert "workloadidentity: AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID not set" in message


@pytest.mark.parametrize(
    ("methods", "words"),
    [("spiffe", "SPIFFE workload identity is not supported"), ("msi", "'msi', which is not a method"),
     ("none", "Azure authentication is turned off"), ("mi,none", "Azure authentication is turned off")],
)
def test_methods_that_cannot_serve_are_refused_at_validation(methods: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        KeyVaultStore.validate(parse({"vaultName": "kv1", "azureAuthMethods": methods}))
    assert "'azureAuthMethods'" in caught.value.message and words in caught.value.message


def test_the_singular_auth_method_warns_that_it_is_deprecated() -> None:
    from secretbridge.backends import validate_component

    valid = validate_component({"backend": "keyvault", "vaultName": "kv1", "azureAuthMethod": "managedidentity"})
    assert any(prop == "azureAuthMethod" and "deprecated" in text and "azureAuthMethods" in text
               for prop, text in valid.warnings)


async def test_unreadable_certificate_fails_naming_the_property(tmp_path) -> None:  # type: ignore[no-untyped-def]
    metadata = parse({"vaultName": "kv1", "azureTenantId": "t", "azureClientId": "c",
                      "azureCertificateFile": str(tmp_path / "missing.pem")})
    with pytest.raises(FailedPrecondition, match="'azureCertificateFile'"):
        build_credential(metadata, environ={})


def test_redact_scrubs_tokens_and_the_identity_header() -> None:
    env = {"IDENTITY_HEADER": "hdr-value-123"}
    text = ('header hdr-value-123 {"access_token": "abc.def", "x": 1} Bearer tok123 '
            "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl")
    scrubbed = redact(text, environ=env)
    for leaked in ("hdr-value-123", "abc.def", "tok123", "eyJhbGciOi"):
        assert leaked not in scrubbed


# -- references -------------------------------------------------------------------------------------


def test_parse_secret_uri_and_references() -> None:
    assert parse_secret_uri("https://kv1.vault.azure.net/secrets/db-pass") == SecretRef(
        "https://kv1.vault.azure.net", "db-pass", None)
    assert parse_secret_uri("https://kv1.vault.azure.net/secrets/db-pass/abc123/") == SecretRef(
        "https://kv1.vault.azure.net", "db-pass", "abc123")
    assert parse_secret_uri("https://127.0.0.1:8443/secrets/x").vault_url == "https://127.0.0.1:8443"
    for bad in ("http://kv1.vault.azure.net/secrets/a", "https://kv1.vault.azure.net/keys/a",
                "https://kv1.vault.azure.net/secrets/a_b", "https://kv1.vault.azure.net/secrets"):
        with pytest.raises(InvalidArgument):
            parse_secret_uri(bad)
    assert parse_reference("plain value") is None
    assert parse_reference("@Microsoft.KeyVault(SecretUri=https://kv1.vault.azure.net/secrets/a/v1)") == \
        SecretRef("https://kv1.vault.azure.net", "a", "v1")
    assert parse_reference("@Microsoft.KeyVault(VaultName=kv1;SecretName=a;SecretVersion=v2)") == \
        SecretRef("https://kv1.vault.azure.net", "a", "v2")
    with pytest.raises(InvalidArgument):
        parse_reference("@Microsoft.KeyVault(VaultName=kv1)")


# -- reads ------------------------------------------------------------------------------------------


async def test_get_latest_version_and_case(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    first = fake_vault.set_secret("db-password", "one")
    fake_vault.set_secret("db-password", "two")
    store = await open_store(vault_metadata(fake_vault))
    assert await store.get("db-password") == {"db-password": "two"}
    assert await store.get("DB-PASSWORD") == {"DB-PASSWORD": "two"}
    assert await store.get("db-password", first) == {"db-password": "one"}
    message = await expect(NotFound, store.get("db-password", "f" * 32))
    assert "db-password" in message and "ffff" in message
    message = await expect(NotFound, store.get("nope"))
    assert "'nope'" in message and fake_vault.url in message


async def test_every_vault_request_carries_its_own_client_request_id(
    fake_vault: FakeKeyVault, open_store: OpenStore
) -> None:
    # Key Vault's logs and Azure support find a request by this id; each must be unique and GUID-shaped.
    for n in range(30):
        fake_vault.set_secret(f"s-{n}", "v")
    store = await open_store(vault_metadata(fake_vault))
    fake_vault.reset_counters()
    assert len(await store.bulk_get()) == 30
    await store.get("s-1")
    ids = fake_vault.request_ids
    challenges = fake_vault.count("challenge")  # the first request is sent again with a token, same id
    assert challenges >= 1 and len(ids) == 30 + 2 + 1 + challenges  # the reads, two pages, one Get
    assert len(set(ids)) == len(ids) - challenges
    assert all(i is not None and re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", i) for i in ids)


async def test_bad_names_are_refused_before_the_vault(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    store = await open_store(vault_metadata(fake_vault))
    message = await expect(InvalidArgument, store.get("db_password"))
    assert "'_'" in message and "nameMapping" in message and "dashes" in message
    message = await expect(InvalidArgument, store.get("a/b"))
    assert "'/'" in message and "nameMapping" not in message
    await expect(InvalidArgument, store.get("x" * 128))
    assert fake_vault.count("total") == 0


async def test_name_mapping_and_prefix(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    fake_vault.set_secret("prod-db-password", "p")
    fake_vault.set_secret("prod-smtp-host", "h")
    fake_vault.set_secret("test-db-password", "t")
    fake_vault.set_secret("prod", "the prefix alone")
    store = await open_store(vault_metadata(fake_vault, nameMapping="dashes", keyPrefix="prod-"))
    assert await store.get("db_password") == {"db_password": "p"}
    assert await store.get("smtp.host") == {"smtp.host": "h"}
    assert await store.bulk_get() == {"db-password": {"db-password": "p"}, "smtp-host": {"smtp-host": "h"}}


async def test_expired_and_not_yet_valid_are_served_as_key_vault_serves_them(
    fake_vault: FakeKeyVault, open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    fake_vault.set_secret("off", "x", enabled=False)
    fake_vault.set_secret("old", "x", exp=time.time() - 60)
    fake_vault.set_secret("early", "x", nbf=time.time() + 3600)
    fake_vault.set_secret("fine", "x", exp=time.time() + 3600, nbf=time.time() - 60)
    store = await open_store(vault_metadata(fake_vault))
    counted: list[str] = []
    store.on_notice = counted.append
    assert "disabled" in await expect(FailedPrecondition, store.get("off"))
    with caplog.at_level(logging.WARNING):
        assert await store.get("old") == {"old": "x"}
        assert await store.get("old") == {"old": "x"}
        assert await store.get("early") == {"early": "x"}
        assert await store.bulk_get() == {"early": {"early": "x"}, "fine": {"fine": "x"}, "old": {"old": "x"}}
    # Counted every time one is served; warned about once per secret.
    assert counted == ["outside_validity"] * 5
    warned = [r for r in caplog.records if "outside its validity" in r.getMessage()]
    assert sorted(getattr(r, "secret", "") for r in warned) == ["early", "old"]
    assert "expired at" in getattr(warned[0], "reason", "")


@pytest.mark.parametrize("refusing", [{"refuseExpired": "true"}, {"allowExpired": "false"},
                                      {"allowExpired": "true", "refuseExpired": "yes"}])
async def test_a_component_may_refuse_them(
    fake_vault: FakeKeyVault, open_store: OpenStore, refusing: dict[str, str]
) -> None:
    fake_vault.set_secret("old", "x", exp=time.time() - 60)
    fake_vault.set_secret("early", "x", nbf=time.time() + 3600)
    fake_vault.set_secret("fine", "x")
    store = await open_store(vault_metadata(fake_vault, **refusing))
    assert "expired at" in await expect(FailedPrecondition, store.get("old"))
    assert "refuseExpired" in await expect(FailedPrecondition, store.get("early"))
    assert await store.bulk_get() == {"fine": {"fine": "x"}}
    # The deprecated allowExpired: "true" still serves them.
    lenient = await open_store(vault_metadata(fake_vault, allowExpired="true"))
    assert await lenient.get("old") == {"old": "x"}


async def test_multi_valued(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    fake_vault.set_secret("conn", json.dumps({"host": "db", "port": 5432, "tls": {"on": True}}))
    fake_vault.set_secret("plain", "just-text")
    fake_vault.set_secret("list", "[1, 2]")
    store = await open_store(vault_metadata(fake_vault, multiValued="true"))
    assert store.multi_valued
    assert await store.get("conn") == {"host": "db", "port": "5432", "tls": '{"on":true}'}
    assert await store.get("plain") == {"plain": "just-text"}
    assert await store.get("list") == {"list": "[1, 2]"}
    assert (await store.bulk_get())["conn"]["host"] == "db"
    single = await open_store(vault_metadata(fake_vault))
    assert (await single.get("conn"))["conn"].startswith("{")


async def test_forbidden_names_identity_and_role(fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity,
                                                 open_store: OpenStore) -> None:
    fake_vault.set_secret("s", "value-that-must-not-leak")
    store = await open_store(vault_metadata(fake_vault, azureClientId="client-77"))
    await store.get("s")
    fake_vault.forbid()
    message = await expect(PermissionDenied, store.get("s"))
    assert "user-assigned managed identity with client id client-77" in message
    assert "Key Vault Secrets User" in message and "'s'" in message
    assert type(await _error_of(store.check())).__name__ == "PermissionDenied"
    for token in fake_identity.issued():
        assert token not in message


async def _error_of(call: Awaitable[object]) -> BaseException:
    try:
        await call
    except BaseException as exc:
        return exc
    raise AssertionError("no error")


async def test_throttling_is_survived_then_reported(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    fake_vault.set_secret("hot", "v")
    store = await open_store(vault_metadata(fake_vault, maxRetries="2"))
    await store.get("hot")
    fake_vault.throttle(2, retry_after=0.1)
    assert await store.get("hot") == {"hot": "v"}
    assert fake_vault.count("throttled") == 2
    # Each of the SDK's 1 + maxRetries attempts waits out 1 + MAX_THROTTLED_RESENDS 429s (the vault's
    # budget pauses every request for Retry-After); past all of them the 429 is reported.
    sends = (1 + MAX_THROTTLED_RESENDS) * (1 + 2)
    fake_vault.reset_counters()
    fake_vault.throttle(sends, retry_after=0.01)
    message = await expect(Unavailable, store.get("hot"))
    assert "429" in message and "'hot'" in message
    assert fake_vault.count("throttled") == sends
    fake_vault.throttle(0)
    fake_vault.fail(1, 503)
    assert await store.get("hot") == {"hot": "v"}  # one 503, then a retry
    once = await open_store(vault_metadata(fake_vault, maxRetries="1"))
    fake_vault.fail(5, 500)
    assert "500" in await expect(Unavailable, once.get("hot"))


async def test_vault_down_is_unavailable(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    fake_vault.set_secret("x", "y")
    store = await open_store(vault_metadata(fake_vault))
    await store.get("x")
    fake_vault.go_down()
    message = await expect(Unavailable, store.get("x"))
    assert "cannot reach" in message and fake_vault.url in message
    fake_vault.come_up()
    assert await store.get("x") == {"x": "y"}


async def test_slow_vault_is_deadline_exceeded(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    fake_vault.set_secret("x", "y")
    store = await open_store(vault_metadata(fake_vault, requestTimeout="200ms", maxRetries="0"))
    await store.get("x")
    fake_vault.set_latency(2)
    message = await expect(DeadlineExceeded, store.get("x"))
    assert "did not answer in time" in message and "'x'" in message


async def test_token_endpoint_down_is_unavailable_and_names_the_identity(
    fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity, open_store: OpenStore
) -> None:
    fake_vault.set_secret("x", "y")
    fake_identity.go_down()
    store = await open_store(vault_metadata(fake_vault, azureClientId="cid-down"))
    message = await expect(Unavailable, store.get("x"))
    assert "could not get a token for the user-assigned managed identity with client id cid-down" in message
    assert fake_identity.identity_header not in message
    await expect(Unavailable, store.check())
    fake_identity.come_up()
    assert await store.get("x") == {"x": "y"}


async def test_unknown_user_assigned_identity_is_permission_denied(
    fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity, open_store: OpenStore
) -> None:
    fake_identity.user_assigned = {"the-right-one"}
    fake_vault.set_secret("x", "y")
    store = await open_store(vault_metadata(fake_vault, azureClientId="a-wrong-one"))
    message = await expect(IdentityRefused, store.get("x"))
    assert "a-wrong-one" in message and "Identity not found" in message


async def test_refused_token_is_permission_denied(fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity,
                                                  open_store: OpenStore) -> None:
    fake_vault.set_secret("x", "y")
    store = await open_store(vault_metadata(fake_vault))
    await store.get("x")
    fake_identity.tokens.revoke_all()
    message = await expect(IdentityRefused, store.get("x"))
    assert "401" in message and "system-assigned" in message


async def test_concurrent_cold_calls_share_one_token_request(
    fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity, open_store: OpenStore
) -> None:
    for i in range(20):
        fake_vault.set_secret(f"s{i}", str(i))
    store = await open_store(vault_metadata(fake_vault))
    results = await asyncio.gather(*(store.get(f"s{i}") for i in range(20)))
    assert [r[f"s{i}"] for i, r in enumerate(results)] == [str(i) for i in range(20)]
    assert len(fake_identity.requests) == 1


async def test_reads_use_the_clients_api_version(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    fake_vault.set_secret("a", "1")
    store = await open_store(vault_metadata(fake_vault))
    fake_vault.reset_counters()
    assert await store.bulk_get() == {"a": {"a": "1"}}
    assert await store.get("a") == {"a": "1"}
    versions = {query.get("api-version") for _, _, query in fake_vault.log}
    assert versions == {store.reader._client.api_version}  # the SDK's own, listing and reads alike


async def test_reads_carry_the_sdks_user_agent_and_a_request_id(
    fake_vault: FakeKeyVault, open_store: OpenStore
) -> None:
    fake_vault.set_secret("a", "1")
    store = await open_store(vault_metadata(fake_vault))
    fake_vault.reset_counters()
    await store.get("a")
    agents = fake_vault.user_agents
    assert agents and all(agent.startswith("azsdk-python-keyvault-secrets/") for agent in agents)
    assert all(fake_vault.request_ids)


async def test_a_redirect_is_refused_and_the_token_goes_nowhere(
    kv_certs, fake_identity: FakeManagedIdentity, fake_vault: FakeKeyVault,  # type: ignore[no-untyped-def]
    open_store: OpenStore,
) -> None:
    fake_vault.set_secret("a", "1")
    with FakeKeyVault(kv_certs, identity=fake_identity) as elsewhere:
        elsewhere.set_secret("a", "stolen")
        store = await open_store(vault_metadata(fake_vault, maxRetries="0"))
        fake_vault.redirect(1, elsewhere.url)
        with pytest.raises(Unavailable, match=r"read secret 'a' \(307"):
            await store.get("a")
        assert elsewhere.count() == 0
        assert await store.get("a") == {"a": "1"}  # the next read is the vault's own again


async def test_session_pool_and_proxies(azure_env: pytest.MonkeyPatch, fake_vault: FakeKeyVault,
                                        open_store: OpenStore) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        azure_env.delenv(name, raising=False)
    azure_env.setenv("NO_PROXY", "127.0.0.1")
    store = await open_store(vault_metadata(fake_vault, bulkConcurrency="200"))
    session = store._http._session  # type: ignore[union-attr]
    # No proxy configured: no per-request proxy and .netrc lookups in threads.
    assert session.trust_env is False
    # Room for every BulkGet reader, the listing and the cache's concurrent Gets: nothing queues.
    assert session.connector.limit >= 200 + 32 + 1 and session.connector.limit_per_host == 0
    azure_env.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    proxied = await open_store(vault_metadata(fake_vault))
    assert proxied._http._session.trust_env is True  # type: ignore[union-attr]


# -- bulk -------------------------------------------------------------------------------------------


async def test_bulk_lists_every_page_and_skips_disabled(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    for i in range(60):
        fake_vault.set_secret(f"s{i:02d}", f"v{i}", enabled=i % 10 != 3)
    store = await open_store(vault_metadata(fake_vault))
    everything = await store.bulk_get()
    assert len(everything) == 54
    assert everything["s00"] == {"s00": "v0"} and "s03" not in everything
    assert fake_vault.count("list") == 3
    assert list(everything) == sorted(everything)  # listing order


async def test_bulk_limit_is_exact_and_stops_listing(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    for i in range(60):
        fake_vault.set_secret(f"s{i:02d}", f"v{i}")
    store = await open_store(vault_metadata(fake_vault))
    fake_vault.reset_counters()
    limited = await store.bulk_get(30)
    assert list(limited) == [f"s{i:02d}" for i in range(30)]
    assert fake_vault.count("list") == 2 and fake_vault.count("get") == 30
    assert await store.bulk_get(0) == {}


async def test_bulk_is_concurrent_within_its_bound(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    for i in range(40):
        fake_vault.set_secret(f"s{i}", "v")
    store = await open_store(vault_metadata(fake_vault, bulkConcurrency="6"))
    await store.check()
    fake_vault.set_latency(0.05)
    fake_vault.reset_counters()
    assert len(await store.bulk_get()) == 40
    assert 1 < fake_vault.max_reads_in_flight <= 6
    # The listing's next page may be in flight beside them (reads overlap the listing).
    assert fake_vault.max_in_flight <= 6 + 1


def _reads_and_pages(fake_vault: FakeKeyVault) -> tuple[list[int], list[int]]:
    """Positions in the fake's request log (arrival order) of the secret reads and the list pages."""
    reads, pages = [], []
    for position, (_, path, _) in enumerate(fake_vault.log):
        segments = path.strip("/").split("/")
        if segments == ["secrets"]:
            pages.append(position)
        elif segments[0] == "secrets" and len(segments) in (2, 3) and segments[-1] != "versions":
            reads.append(position)
    return reads, pages


async def test_bulk_reads_start_before_the_listing_ends(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    for i in range(100):
        fake_vault.set_secret(f"s{i:03d}", f"v{i}")
    store = await open_store(vault_metadata(fake_vault, bulkConcurrency="8"))
    await store.check()  # challenge and token out of the way
    fake_vault.set_latency(0.03)
    fake_vault.reset_counters()
    everything = await store.bulk_get()
    assert list(everything) == [f"s{i:03d}" for i in range(100)]  # listing order
    reads, pages = _reads_and_pages(fake_vault)
    assert len(pages) == 4 and len(reads) == 100
    # The first page's names are being read before the last page is even asked for.
    assert sum(1 for r in reads if r < pages[-1]) >= 8
    assert fake_vault.max_reads_in_flight <= 8


async def test_bulk_limit_is_exact_across_pages(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    for i in range(100):
        fake_vault.set_secret(f"s{i:03d}", f"v{i}", enabled=i % 4 != 1)  # every fourth is left out
    store = await open_store(vault_metadata(fake_vault, bulkConcurrency="4"))
    fake_vault.reset_counters()
    limited = await store.bulk_get(40)
    assert list(limited) == [f"s{i:03d}" for i in range(54) if i % 4 != 1]  # 40 names over 3 pages
    assert fake_vault.count("list") == 3 and fake_vault.count("get") == 40
    fake_vault.reset_counters()
    assert list(await store.bulk_get(3)) == ["s000", "s002", "s003"]
    assert fake_vault.count("list") == 1 and fake_vault.count("get") == 3


async def _settled_count(vault: FakeKeyVault, quiet: float = 0.5) -> int:
    """The fake's request count once it has caught up.

    Requests sent before a failure may reach a busy fake a little later; that is not the store
    asking again. Once nothing has arrived for `quiet` seconds, later arrivals would be.
    """
    loop = asyncio.get_running_loop()
    seen, quiet_since = vault.count("total"), loop.time()
    while loop.time() - quiet_since < quiet:
        await asyncio.sleep(0.05)
        if vault.count("total") != seen:
            seen, quiet_since = vault.count("total"), loop.time()
    return seen


async def test_a_failed_bulk_read_cancels_the_rest_and_the_listing(
    fake_vault: FakeKeyVault, open_store: OpenStore
) -> None:
    for i in range(200):
        fake_vault.set_secret(f"s{i:03d}", f"v{i}")
    fake_vault.break_secret("s002", 500)
    store = await open_store(vault_metadata(fake_vault, bulkConcurrency="4", maxRetries="0"))
    await store.check()
    fake_vault.set_latency(0.05)
    fake_vault.reset_counters()
    message = await expect(Unavailable, store.bulk_get())
    assert "'s002'" in message and "500" in message
    seen = await _settled_count(fake_vault)
    await asyncio.sleep(0.5)  # ten latencies: anything still running would have asked by now
    assert fake_vault.count("total") == seen
    reads, pages = _reads_and_pages(fake_vault)
    assert len(pages) < 8 and len(reads) < 20  # of 8 pages and 200 reads
    # The store still works afterwards (no reader or page left behind holding a connection).
    fake_vault.set_latency(0)
    fake_vault.repair("s002")
    assert len(await store.bulk_get()) == 200


async def test_a_failed_listing_cancels_the_reads(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    for i in range(60):
        fake_vault.set_secret(f"s{i:03d}", f"v{i}")
    store = await open_store(vault_metadata(fake_vault, maxRetries="0"))
    await store.check()
    fake_vault.set_latency(0.05)
    fake_vault.reset_counters()
    task = asyncio.ensure_future(store.bulk_get())
    for _ in range(100):  # until the first page is in and its names are being read
        if fake_vault.count("list") >= 1:
            break
        await asyncio.sleep(0.01)
    fake_vault.forbid()
    with pytest.raises(PermissionDenied) as caught:
        await task
    assert "list the secrets" in caught.value.message or "BulkGet stopped" in caught.value.message
    seen = await _settled_count(fake_vault)
    await asyncio.sleep(0.5)
    assert fake_vault.count("total") == seen
    assert seen < 60, "every secret was read despite the failure"


async def test_bulk_failure_names_the_secret_or_is_skipped(
    fake_vault: FakeKeyVault, open_store: OpenStore, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("a", "b", "c"):
        fake_vault.set_secret(name, f"value-of-{name}")
    fake_vault.break_secret("b", 500)
    strict = await open_store(vault_metadata(fake_vault))
    message = await expect(Unavailable, strict.bulk_get())
    assert "'b'" in message and "500" in message
    lenient = await open_store(vault_metadata(fake_vault, bulkSkipErrors="true"))
    with caplog.at_level(logging.WARNING, logger="secretbridge"):
        assert await lenient.bulk_get() == {"a": {"a": "value-of-a"}, "c": {"c": "value-of-c"}}
    skipped = [r for r in caplog.records if getattr(r, "secret", None) == "b"]
    assert len(skipped) == 1
    assert "value-of" not in caplog.text


async def test_bulk_ignores_secrets_deleted_after_listing(fake_vault: FakeKeyVault, open_store: OpenStore) -> None:
    fake_vault.set_secret("keep", "1")
    fake_vault.set_secret("gone", "2")
    fake_vault.break_secret("gone", 404)
    store = await open_store(vault_metadata(fake_vault))
    assert await store.bulk_get() == {"keep": {"keep": "1"}}


# -- identity styles --------------------------------------------------------------------------------


async def test_imds_style_identity(kv_certs, azure_env: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                   open_store: OpenStore) -> None:
    from azure.keyvault.secrets._shared import http_challenge_cache

    http_challenge_cache.clear()
    with FakeManagedIdentity() as identity, FakeKeyVault(kv_certs, identity=identity) as vault:
        for name, value in identity.env("imds").items():
            azure_env.setenv(name, value)
        vault.set_secret("on-a-vm", "yes")
        store = await open_store(vault_metadata(vault, azureClientId="vm-identity"))
        assert await store.get("on-a-vm") == {"on-a-vm": "yes"}
        (request,) = identity.requests
        assert request.style == "imds" and request.client_id == "vm-identity"


async def test_nothing_secret_reaches_messages_or_logs(
    fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity, open_store: OpenStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    values = [f"top-secret-value-{i}" for i in range(5)]
    for i, value in enumerate(values):
        fake_vault.set_secret(f"s{i}", value)
    fake_vault.set_secret("gone", "top-secret-disabled", enabled=False)
    # Both doubles quote what they received in their error answers: the token, the identity
    # header, a broken secret's value. Every path below carries one of them into an error.
    fake_vault.echo_requests = True
    fake_identity.echo_credentials = True
    messages: list[str] = []
    with caplog.at_level(logging.DEBUG):
        store = await open_store(vault_metadata(fake_vault, bulkSkipErrors="true", azureClientId="cid",
                                                maxRetries="0"))
        await store.bulk_get()
        for name in ("gone", "missing", "bad_name"):
            messages.append(str(await _error_of(store.get(name))))
        fake_vault.forbid()
        messages.append(str(await _error_of(store.get("s1"))))
        fake_vault.forbid(False)
        fake_vault.break_secret("s2", 500)
        await store.bulk_get()
        messages.append(str(await _error_of(store.get("s2"))))
        fake_vault.fail(1, 503)
        messages.append(str(await _error_of(store.get("s4"))))
        fake_vault.throttle(1 + MAX_THROTTLED_RESENDS, retry_after=0.01)  # past the budget's resends
        messages.append(str(await _error_of(store.get("s4"))))
        fake_identity.tokens.revoke_all()
        fake_identity.fail(5, 500)
        messages.append(str(await _error_of(store.get("s1"))))
        # A store with no token yet meets the failing identity endpoint, which quotes the header.
        fresh = await open_store(vault_metadata(fake_vault, azureClientId="cid", maxRetries="0"))
        messages.append(str(await _error_of(fresh.get("s1"))))
        fake_vault.go_down()
        messages.append(str(await _error_of(store.get("s3"))))
    forbidden = [*values, "top-secret-disabled", fake_identity.identity_header, *fake_identity.issued()]
    text = caplog.text + "\n".join(messages) + "\n".join(str(r.__dict__) for r in caplog.records)
    print("MSGS", messages)
    assert "[redacted]" in messages[-2]  # the quoted identity header reached an error, scrubbed
    for item in forbidden:
        assert item not in text


TENANT = "3c1d2e4f-0000-4000-8000-00000000abcd"


async def test_workload_identity(kv_certs, azure_env: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                 open_store: OpenStore, tmp_path) -> None:
    from azure.keyvault.secrets._shared import http_challenge_cache

    http_challenge_cache.clear()
    with FakeManagedIdentity(certificates=kv_certs) as entra, \
            FakeKeyVault(kv_certs, identity=entra, tenant=TENANT) as vault:
        token_file = tmp_path / "azure-identity-token"
        token_file.write_text(entra.federated_token)
        for name, value in {**entra.env("entra"), "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
                            "AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": "wi-client"}.items():
            azure_env.setenv(name, value)
        vault.set_secret("from-aks", "yes")
        store = await open_store(vault_metadata(vault))
        assert store.identity.startswith("the first that answers of the workload identity with client id wi-client")
        assert await store.get("from-aks") == {"from-aks": "yes"}
        (request,) = entra.requests
        assert request.style == "entra" and request.client_id == "wi-client"
        assert request.other_params["tenant"] == TENANT


async def test_service_principal_from_metadata(kv_certs, azure_env: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                               open_store: OpenStore) -> None:
    from azure.keyvault.secrets._shared import http_challenge_cache

    http_challenge_cache.clear()
    secret = "sp-client-secret-value"
    with FakeManagedIdentity(certificates=kv_certs, client_secrets={"sp-client": secret}) as entra, \
            FakeKeyVault(kv_certs, identity=entra, tenant=TENANT) as vault:
        for name, value in entra.env("entra").items():
            azure_env.setenv(name, value)
        vault.set_secret("dev", "ok")
        good = await open_store(vault_metadata(vault, azureTenantId=TENANT, azureClientId="sp-client",
                                               azureClientSecret=secret))
        assert await good.get("dev") == {"dev": "ok"}
        assert entra.requests[-1].client_id == "sp-client"
        http_challenge_cache.clear()
        bad = await open_store(vault_metadata(vault, azureTenantId=TENANT, azureClientId="sp-client",
                                              spnClientSecret="a-wrong-secret-value"))
        message = await expect(IdentityRefused, bad.get("dev"))
        assert "service principal with client id sp-client" in message
        assert "a-wrong-secret-value" not in message and secret not in message


async def test_workload_identity_takes_the_webhooks_client_id_as_the_builtin_store_does(
    kv_certs, azure_env: pytest.MonkeyPatch, open_store: OpenStore, tmp_path  # type: ignore[no-untyped-def]
) -> None:
    from azure.keyvault.secrets._shared import http_challenge_cache

    http_challenge_cache.clear()
    with FakeManagedIdentity(certificates=kv_certs) as entra, \
            FakeKeyVault(kv_certs, identity=entra, tenant=TENANT) as vault:
        token_file = tmp_path / "azure-identity-token"
        token_file.write_text(entra.federated_token)
        # The webhook's AZURE_CLIENT_ID names the service account's identity; the Component names another,
        # which (as in Dapr's built-in store) is the managed identity's, tried after workload identity.
        for name, value in {**entra.env("entra"), "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
                            "AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": "webhook-client"}.items():
            azure_env.setenv(name, value)
        vault.set_secret("from-aks", "yes")
        store = await open_store(vault_metadata(vault, azureClientId="component-client"))
        assert store.identity.startswith("the first that answers of the workload identity with client id "
                                         "webhook-client, then the user-assigned managed identity with client id "
                                         "component-client")
        assert await store.get("from-aks") == {"from-aks": "yes"}
        (request,) = entra.requests
        assert request.client_id == "webhook-client"


async def test_a_configured_client_secret_echoed_by_the_token_endpoint_is_scrubbed(
    kv_certs, azure_env: pytest.MonkeyPatch, open_store: OpenStore,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    from azure.keyvault.secrets._shared import http_challenge_cache

    http_challenge_cache.clear()
    configured = "configured-SP-secret-4e7a"
    with FakeManagedIdentity(certificates=kv_certs, client_secrets={"sp-client": "the-right-one"}) as entra, \
            FakeKeyVault(kv_certs, identity=entra, tenant=TENANT) as vault:
        entra.echo_credentials = True
        for name, value in entra.env("entra").items():
            azure_env.setenv(name, value)
        vault.set_secret("dev", "ok")
        with caplog.at_level(logging.DEBUG):
            store = await open_store(vault_metadata(vault, azureTenantId=TENANT, azureClientId="sp-client",
                                                    azureClientSecret=configured))
            message = await expect(IdentityRefused, store.get("dev"))
    # The endpoint's reason is shown (so the scrubbing is what keeps the secret out) ...
    assert "AADSTS7000215" in message and "[redacted]" in message
    # ... and the secret it quoted is not.
    assert configured not in message
    assert configured not in caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
