"""Key Vault references in a Container Apps secret volume, resolved against the fake vault.

Real gRPC over the socket, the real azure SDK over HTTPS with the test CA, the fake
managed-identity endpoint; the volume is written in kubelet's atomic-writer layout.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from secretbridge.azure.hosts import AzureEnvironment
from secretbridge.azure.reference_reader import ReferenceReader
from secretbridge.azure.references import vet_reference
from secretbridge.backends import properties_for
from secretbridge.backends.containerapps import ContainerAppsStore
from secretbridge.core.errors import FailedPrecondition, PermissionDenied
from secretbridge.core.metadata import parse_metadata

from tests.fakes import FakeKeyVault, FakeManagedIdentity
from tests.support import Bridge, move_time
from tests.test_containerapps import AtomicVolume, code_of, eventually, logged

pytest_plugins = ("tests.fakes.fixtures",)


def host_of(vault: FakeKeyVault) -> str:
    return urlsplit(vault.url).netloc


def uri_ref(vault: FakeKeyVault, name: str, version: str | None = None) -> str:
    tail = f"/{version}" if version else ""
    return f"@Microsoft.KeyVault(SecretUri={vault.url}/secrets/{name}{tail})"


def init(bridge: Bridge, volume: AtomicVolume, vault: FakeKeyVault, **extra: str) -> None:
    bridge.init({
        "backend": "containerapps",
        "secretsPath": str(volume.root),
        "keyVaultReferenceHosts": host_of(vault),
        "maxRetries": "0",
        **extra,
    })


@pytest.fixture
def volume(tmp_path: Path) -> AtomicVolume:
    return AtomicVolume(tmp_path / "secrets")


def test_secret_uri_references_resolve_with_whitespace_and_trailing_newline(
    bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity
) -> None:
    fake_vault.set_secret("db-password", "vault-value-1")
    volume.write({
        "db": uri_ref(fake_vault, "db-password") + "\n",
        "spaced": f"  @Microsoft.KeyVault( SecretUri = {fake_vault.url}/secrets/db-password/ )\r\n",
        "plain": "not-a-reference",
    })
    init(bridge, volume, fake_vault)
    assert bridge.get("db") == {"db": "vault-value-1"}
    assert bridge.get("spaced") == {"spaced": "vault-value-1"}
    assert bridge.get("plain") == {"plain": "not-a-reference"}
    assert bridge.bulk_get() == {
        "db": {"db": "vault-value-1"}, "plain": {"plain": "not-a-reference"}, "spaced": {"spaced": "vault-value-1"}
    }
    # The system-assigned identity (no azureClientId) asked for a Key Vault token.
    assert fake_identity.requests and not any(r.user_assigned for r in fake_identity.requests)
    assert {r.resource for r in fake_identity.requests} == {"https://vault.azure.net"}


def test_reads_are_cached_and_single_flight(
    bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault
) -> None:
    fake_vault.set_secret("hot", "cached-value")
    volume.write({"a": uri_ref(fake_vault, "hot"), "b": uri_ref(fake_vault, "hot")})
    init(bridge, volume, fake_vault)
    for _ in range(5):
        assert bridge.get("a") == {"a": "cached-value"}
        assert bridge.get("b") == {"b": "cached-value"}
    assert bridge.bulk_get() == {"a": {"a": "cached-value"}, "b": {"b": "cached-value"}}
    assert fake_vault.count("get") == 1  # one vault read for one referenced secret, within cacheTTL


def test_versionless_references_pick_up_new_versions_within_cache_ttl(
    bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault
) -> None:
    first = fake_vault.set_secret("rotating", "version-one")
    volume.write({"latest": uri_ref(fake_vault, "rotating"), "pinned": uri_ref(fake_vault, "rotating", first)})
    init(bridge, volume, fake_vault, cacheTTL="30s")
    clock = move_time(bridge, resolver=True)
    assert bridge.get("latest") == {"latest": "version-one"}
    fake_vault.set_secret("rotating", "version-two")
    assert bridge.get("latest") == {"latest": "version-one"}  # within cacheTTL
    clock.advance(31)
    assert bridge.get("latest") == {"latest": "version-two"}
    assert bridge.get("pinned") == {"pinned": "version-one"}


def test_a_volume_update_to_another_reference_is_seen_at_once(
    bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault
) -> None:
    fake_vault.set_secret("old-target", "old-value")
    fake_vault.set_secret("new-target", "new-value")
    volume.write({"ref": uri_ref(fake_vault, "old-target")})
    init(bridge, volume, fake_vault, cacheTTL="1h")
    assert bridge.get("ref") == {"ref": "old-value"}
    volume.write({"ref": uri_ref(fake_vault, "new-target")})
    assert eventually(lambda: bridge.get("ref") == {"ref": "new-value"})


def test_a_user_assigned_identity_reaches_the_token_endpoint(
    bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity
) -> None:
    fake_vault.set_secret("x", "uami-value")
    volume.write({"x": uri_ref(fake_vault, "x")})
    init(bridge, volume, fake_vault, azureClientId="0b7e-uami-client")
    assert bridge.get("x") == {"x": "uami-value"}
    assert {r.client_id for r in fake_identity.requests} == {"0b7e-uami-client"}


def test_multi_valued_references_to_json_objects(
    bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault
) -> None:
    fake_vault.set_secret("conn", json.dumps({"host": "db", "port": 5432}))
    volume.write({"conn": uri_ref(fake_vault, "conn")})
    init(bridge, volume, fake_vault, multiValued="true")
    assert bridge.features() == ["MULTIPLE_KEY_VALUES_PER_SECRET"]
    assert bridge.get("conn") == {"host": "db", "port": "5432"}


def test_unresolvable_references_are_errors_naming_the_secret_and_the_cause(
    bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault
) -> None:
    fake_vault.set_secret("off", "disabled-value")
    fake_vault.disable("off")
    fake_vault.set_secret("fine", "fine-value")
    volume.write({
        "missing": uri_ref(fake_vault, "no-such-secret"),
        "disabled": uri_ref(fake_vault, "off"),
        "bad-version": uri_ref(fake_vault, "fine", "0" * 32),
        "fine": uri_ref(fake_vault, "fine"),
    })
    init(bridge, volume, fake_vault, cacheTTL="0")
    code, message = code_of(lambda: bridge.get("missing"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "'missing'" in message and "'no-such-secret'" in message and "@Microsoft" not in message
    code, message = code_of(lambda: bridge.get("disabled"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "'disabled'" in message and "disabled" in message
    assert code_of(lambda: bridge.get("bad-version"))[0] == grpc.StatusCode.NOT_FOUND
    code, message = code_of(lambda: bridge.bulk_get())
    assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
    assert "BulkGet stopped at secret" in message
    fake_vault.forbid()
    code, message = code_of(lambda: bridge.get("fine"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'fine'" in message and "Key Vault Secrets User" in message
    fake_vault.forbid(False)
    fake_vault.fail(100, status=501)  # not retried by the SDK: the outage is seen at once
    code, message = code_of(lambda: bridge.get("fine"))
    assert code == grpc.StatusCode.UNAVAILABLE and "'fine'" in message


def test_the_last_good_value_is_served_while_the_vault_is_down(
    bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault
) -> None:
    fake_vault.set_secret("steady", "steady-value")
    volume.write({"steady": uri_ref(fake_vault, "steady")})
    init(bridge, volume, fake_vault, cacheTTL="30s", maxStale="1h")
    clock = move_time(bridge, resolver=True)
    assert bridge.get("steady") == {"steady": "steady-value"}
    fake_vault.fail(1000, status=501)
    clock.advance(31)  # past cacheTTL: the next reads ask the vault, which fails
    for _ in range(3):
        assert bridge.get("steady") == {"steady": "steady-value"}
    assert fake_vault.count("failed") > 0


def test_hosts_outside_azure_are_refused_before_any_request(
    strict_bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity
) -> None:
    fake_vault.set_secret("db", "never-sent")
    volume.write({"db": uri_ref(fake_vault, "db")})
    strict_bridge.init({"backend": "containerapps", "secretsPath": str(volume.root)})
    code, message = code_of(lambda: strict_bridge.get("db"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert host_of(fake_vault) in message and "--allow-vault-host" in message
    # The recording fakes saw nothing: no vault request, and no token left for that host.
    assert fake_vault.count("total") == 0 and not fake_identity.requests


def test_component_metadata_cannot_allow_a_vault_host_itself(
    strict_bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity
) -> None:
    volume.write({"db": uri_ref(fake_vault, "db")})
    code, message = code_of(lambda: strict_bridge.init(
        {"backend": "containerapps", "secretsPath": str(volume.root), "keyVaultReferenceHosts": host_of(fake_vault)}
    ))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "keyVaultReferenceHosts" in message and host_of(fake_vault) in message and "--allow-vault-host" in message
    assert fake_vault.count("total") == 0 and not fake_identity.requests


def test_deprecated_reference_hosts_still_work_where_the_operator_listed_the_host(
    bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault, caplog: pytest.LogCaptureFixture
) -> None:
    fake_vault.set_secret("db", "from-the-vault")
    volume.write({"db": uri_ref(fake_vault, "db")})
    with caplog.at_level(logging.WARNING):
        init(bridge, volume, fake_vault)  # keyVaultReferenceHosts names the fake; the operator allowed 127.0.0.1
    assert bridge.get("db") == {"db": "from-the-vault"}
    assert any("keyVaultReferenceHosts" in r.getMessage() and "deprecated" in r.getMessage() for r in caplog.records)


def test_resolution_can_be_turned_off(bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault) -> None:
    literal = uri_ref(fake_vault, "db") + "\n"
    volume.write({"db": literal})
    init(bridge, volume, fake_vault, resolveKeyVaultReferences="false")
    assert bridge.get("db") == {"db": literal}
    assert fake_vault.count("total") == 0


def test_fail_fast_init_resolves_every_reference(
    bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault
) -> None:
    volume.write({"gone": uri_ref(fake_vault, "absent")})
    code, message = code_of(lambda: init(bridge, volume, fake_vault, failFast="true"))
    assert code == grpc.StatusCode.NOT_FOUND and "'gone'" in message
    fake_vault.set_secret("absent", "now-here")
    init(bridge, volume, fake_vault, failFast="true")
    assert bridge.get("gone") == {"gone": "now-here"}


def test_no_value_or_token_reaches_a_message_or_a_log(
    bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity,
    caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    values = ["VAULT-VALUE-aaa111", "FILE-VALUE-bbb222\n", "OUTSIDE-VALUE-ccc333", "PINNED-VALUE-ddd444"]
    pinned = fake_vault.set_secret("pinned", values[3])
    fake_vault.set_secret("kv", values[0])
    fake_vault.set_secret("off", "DISABLED-VALUE-eee555")
    fake_vault.disable("off")
    outside = tmp_path / "outside-secret"
    outside.write_text(values[2])
    volume.write({
        "kv": uri_ref(fake_vault, "kv"),
        "pinned": uri_ref(fake_vault, "pinned", pinned),
        "file": values[1],
        "off": uri_ref(fake_vault, "off"),
        "missing": uri_ref(fake_vault, "missing"),
        "binary": b"\xffBINARY-VALUE-fff666",
        "evil": "@Microsoft.KeyVault(SecretUri=https://evil.example/secrets/x)",
    })
    (volume.root / "escape").symlink_to(outside)
    init(bridge, volume, fake_vault)
    messages = []
    for name in ("kv", "pinned", "file", "off", "missing", "binary", "evil", "escape", "../x", "nope"):
        try:
            bridge.get(name)
        except grpc.RpcError as err:
            messages.append(err.details() or "")
    try:
        bridge.bulk_get()
    except grpc.RpcError as err:
        messages.append(err.details() or "")
    fake_vault.fail(100, status=501)
    messages.append(code_of(lambda: bridge.get("missing"))[1])
    assert len(messages) >= 8 and fake_identity.issued()
    every = "\n".join(messages) + "\n" + logged(caplog)
    for secret in [*values, "DISABLED-VALUE-eee555", "BINARY-VALUE-fff666", fake_identity.identity_header,
                   *fake_identity.issued()]:
        assert secret.strip() not in every


def _store(tmp_path: Path, **extra: str) -> ContainerAppsStore:
    raw = {"backend": "containerapps", "secretsPath": str(tmp_path), **extra}
    return ContainerAppsStore(parse_metadata(properties_for(ContainerAppsStore), raw), instance="t")


@pytest.mark.parametrize(
    ("literal", "key", "version"),
    [
        ("@Microsoft.KeyVault(VaultName=myvault;SecretName=db-password)",
         "https://myvault.vault.azure.net/secrets/db-password", None),
        ("@Microsoft.KeyVault( VaultName = myvault ; SecretName = db ; SecretVersion = abc123 )\n",
         "https://myvault.vault.azure.net/secrets/db", "abc123"),
        ("@Microsoft.KeyVault(SecretUri=https://kv-prod.vault.azure.net/secrets/api/0123abcd/)",
         "https://kv-prod.vault.azure.net/secrets/api", "0123abcd"),
        ("@Microsoft.KeyVault(SecretUri=https://kv-prod.vault.azure.net:443/secrets/api)",
         "https://kv-prod.vault.azure.net:443/secrets/api", None),
    ],
)
def test_reference_forms_name_the_vault_and_secret(tmp_path: Path, literal: str, key: str,
                                                   version: str | None) -> None:
    target = vet_reference("s", literal, AzureEnvironment.PUBLIC, frozenset())
    assert (target.key, target.version) == (key, version)


def test_vault_name_references_follow_the_azure_environment() -> None:
    target = vet_reference(
        "s", "@Microsoft.KeyVault(VaultName=cnvault;SecretName=x)", AzureEnvironment.CHINA, frozenset()
    )
    assert target.key == "https://cnvault.vault.azure.cn/secrets/x"


@pytest.mark.parametrize(
    ("literal", "error"),
    [
        ("@Microsoft.KeyVault(SecretUri=https://user@kv.vault.azure.net/secrets/x)", FailedPrecondition),
        ("@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net.example.com/secrets/x)", PermissionDenied),
        ("@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net:8443/secrets/x)", PermissionDenied),
        ("@Microsoft.KeyVault(SecretUri=https://127.0.0.1:8443/secrets/x)", PermissionDenied),
        ("@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/x/ver/extra)", FailedPrecondition),
        ("@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/keys/x)", FailedPrecondition),
        ("@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/x?api-version=1)", FailedPrecondition),
        ("@Microsoft.KeyVault(VaultName=kv;SecretName=under_score)", FailedPrecondition),
    ],
)
def test_suspicious_references_are_refused(literal: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        vet_reference("s", literal, AzureEnvironment.PUBLIC, frozenset())


async def test_a_closed_reference_reader_refuses_instead_of_reopening(tmp_path: Path) -> None:
    metadata = _store(tmp_path).metadata
    reader = ReferenceReader(metadata, timeout=1.0, max_retries=0)
    await reader.close()
    with pytest.raises(FailedPrecondition, match="closed"):
        await reader.get("https://myvault.vault.azure.net/secrets/x")


def test_identity_misconfiguration_is_reported_at_the_first_reference(
    bridge: Bridge, volume: AtomicVolume, fake_vault: FakeKeyVault
) -> None:
    volume.write({"ref": uri_ref(fake_vault, "x"), "plain": "p"})
    init(bridge, volume, fake_vault, azureAuthMethods="clientcredentials")
    assert bridge.get("plain") == {"plain": "p"}
    code, message = code_of(lambda: bridge.get("ref"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'ref'" in message and "azureTenantId" in message
