"""The keyvault backend through the socket, as daprd sees it: real gRPC, real azure SDK, the fakes."""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from secretbridge.azure.budget import MAX_THROTTLED_RESENDS

from tests.fakes import FakeKeyVault, FakeManagedIdentity, TestCertificates, vault_metadata
from tests.support import Bridge

pytest_plugins = ("tests.fakes.fixtures",)

MULTI = "MULTIPLE_KEY_VALUES_PER_SECRET"


def keyvault(vault: FakeKeyVault, **extra: str) -> dict[str, str]:
    # No cache, so every call reaches the fake and counts are exact.
    return {"backend": "keyvault", "cacheTTL": "0", "negativeCacheTTL": "0", "maxStale": "0",
            **vault_metadata(vault, **extra)}


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_system_assigned_identity(bridge: Bridge, fake_vault: FakeKeyVault,
                                  fake_identity: FakeManagedIdentity) -> None:
    fake_vault.set_secret("db-password", "s3cret")
    bridge.init(keyvault(fake_vault))
    assert bridge.get("db-password") == {"db-password": "s3cret"}
    assert bridge.features() == []
    assert fake_identity.requests and not any(r.user_assigned for r in fake_identity.requests)


def test_user_assigned_identity_reaches_the_token_endpoint(bridge: Bridge, fake_vault: FakeKeyVault,
                                                           fake_identity: FakeManagedIdentity) -> None:
    fake_vault.set_secret("db-password", "s3cret")
    bridge.init(keyvault(fake_vault, azureClientId="5b2f1a2e-client"))
    assert bridge.get("db-password") == {"db-password": "s3cret"}
    assert {r.client_id for r in fake_identity.requests} == {"5b2f1a2e-client"}


def test_versions(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    old = fake_vault.set_secret("rotated", "old")
    fake_vault.set_secret("rotated", "new")
    bridge.init(keyvault(fake_vault))
    assert bridge.get("rotated") == {"rotated": "new"}
    assert bridge.get("rotated", {"version_id": old}) == {"rotated": "old"}
    error = rpc_error(bridge.get, "rotated", {"version_id": "0" * 32})
    assert error.code() == grpc.StatusCode.NOT_FOUND and "rotated" in error.details()


def test_bulk_pages_limit_and_skips(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    for i in range(60):
        fake_vault.set_secret(f"s{i:02d}", f"v{i}", enabled=i != 59)
    fake_vault.set_secret("zz-expired", "x", exp=time.time() - 10)
    bridge.init(keyvault(fake_vault, failFast="true"))  # the vault check happens within Init
    fake_vault.reset_counters()
    everything = bridge.bulk_get()
    # As Key Vault and the built-in store: disabled secrets are left out, expired ones served.
    assert len(everything) == 60 and everything["s42"] == {"s42": "v42"}
    assert "s59" not in everything and everything["zz-expired"] == {"zz-expired": "x"}
    assert fake_vault.count("list") == 3  # 25 + 25 + 11: every nextLink followed
    limited = bridge.bulk_get({"maxresults": "30"})
    assert sorted(limited) == [f"s{i:02d}" for i in range(30)]


def test_an_expired_secret_served_is_counted_in_the_metrics(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    from secretbridge.runtime.metrics import metrics_text

    fake_vault.set_secret("stale-cert", "x", exp=time.time() - 10)
    bridge.init(keyvault(fake_vault, cacheTTL="0"), instance="expiry-metric")
    assert bridge.get("stale-cert", instance="expiry-metric") == {"stale-cert": "x"}
    assert bridge.get("stale-cert", instance="expiry-metric") == {"stale-cert": "x"}
    line = 'secretbridge_outside_validity_served_total{backend="keyvault",instance="expiry-metric"} 2.0'
    assert line in metrics_text().decode()


def test_throttling_with_retry_after_is_survived(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_secret("hot", "v")
    bridge.init(keyvault(fake_vault))
    assert bridge.get("hot") == {"hot": "v"}
    fake_vault.throttle(1, retry_after=1)
    assert bridge.get("hot") == {"hot": "v"}
    assert fake_vault.count("throttled") == 1
    # maxRetries 1 (vault_metadata): two attempts, each waiting out 1 + MAX_THROTTLED_RESENDS 429s.
    fake_vault.throttle((1 + MAX_THROTTLED_RESENDS) * 2, retry_after=0.01)
    error = rpc_error(bridge.get, "hot")
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "429" in error.details()


def test_disabled_expired_missing_and_bad_names(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_secret("off", "x", enabled=False)
    fake_vault.set_secret("old", "x", exp=time.time() - 10)
    bridge.init(keyvault(fake_vault, refuseExpired="true"))
    cases = {
        "off": (grpc.StatusCode.FAILED_PRECONDITION, "disabled"),
        "old": (grpc.StatusCode.FAILED_PRECONDITION, "expired"),
        "missing": (grpc.StatusCode.NOT_FOUND, "not found"),
        "db_password": (grpc.StatusCode.INVALID_ARGUMENT, "nameMapping"),
        "../etc/passwd": (grpc.StatusCode.INVALID_ARGUMENT, "letters, digits and '-'"),
    }
    for name, (code, words) in cases.items():
        error = rpc_error(bridge.get, name)
        assert error.code() == code, name
        assert words in error.details() and name in error.details()


def test_forbidden_is_permission_denied(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_secret("s", "x")
    fake_vault.forbid()
    bridge.init(keyvault(fake_vault, azureClientId="cid-403"))
    error = rpc_error(bridge.get, "s")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "cid-403" in error.details() and "Key Vault Secrets User" in error.details()


def test_token_endpoint_down_is_a_clear_unavailable(bridge: Bridge, fake_vault: FakeKeyVault,
                                                    fake_identity: FakeManagedIdentity) -> None:
    fake_vault.set_secret("s", "x")
    fake_identity.go_down()
    bridge.init(keyvault(fake_vault, requestTimeout="3s"))
    error = rpc_error(bridge.get, "s", timeout=30)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "could not get a token for the system-assigned managed identity" in error.details()
    assert fake_identity.identity_header not in error.details()


def test_vault_down_is_unavailable(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_secret("s", "x")
    bridge.init(keyvault(fake_vault))
    fake_vault.go_down()
    error = rpc_error(bridge.get, "s", timeout=30)
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "cannot reach" in error.details()


def test_bulk_reads_concurrently(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    for i in range(30):
        fake_vault.set_secret(f"c{i}", "v")
    bridge.init(keyvault(fake_vault, bulkConcurrency="8"))
    bridge.get("c0")  # token and challenge out of the way
    fake_vault.set_latency(0.05)
    fake_vault.reset_counters()
    assert len(bridge.bulk_get()) == 30
    assert 1 < fake_vault.max_reads_in_flight <= 8
    assert fake_vault.max_in_flight <= 8 + 1  # and the listing's next page


def test_prefix_and_name_mapping(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_secret("staging-db-password", "st")
    fake_vault.set_secret("prod-db-password", "pr")
    bridge.init(keyvault(fake_vault, keyPrefix="staging-", nameMapping="dashes"))
    assert bridge.get("db_password") == {"db_password": "st"}
    assert bridge.get("db.password") == {"db.password": "st"}
    assert bridge.bulk_get() == {"db-password": {"db-password": "st"}}


def test_multi_valued(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_secret("conn", '{"host": "db.internal", "port": 5432}')
    fake_vault.set_secret("token", "opaque")
    bridge.init(keyvault(fake_vault, multiValued="true"))
    assert bridge.features() == [MULTI]
    assert bridge.get("conn") == {"host": "db.internal", "port": "5432"}
    assert bridge.get("token") == {"token": "opaque"}
    assert bridge.bulk_get() == {"conn": {"host": "db.internal", "port": "5432"}, "token": {"token": "opaque"}}


def test_imds_style_identity(bridge: Bridge, kv_certs: TestCertificates, azure_env: pytest.MonkeyPatch) -> None:
    from azure.keyvault.secrets._shared import http_challenge_cache

    http_challenge_cache.clear()
    with FakeManagedIdentity() as identity, FakeKeyVault(kv_certs, identity=identity) as vault:
        for name, value in identity.env("imds").items():
            azure_env.setenv(name, value)
        vault.set_secret("on-aks", "yes")
        bridge.init(keyvault(vault, azureClientId="kubelet-id"))
        assert bridge.get("on-aks") == {"on-aks": "yes"}
        assert {(r.style, r.client_id) for r in identity.requests} == {("imds", "kubelet-id")}


def test_bad_component_metadata_fails_init(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    error = rpc_error(bridge.init, {"backend": "keyvault", "vaultUri": "http://127.0.0.1:1"})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "vaultUri" in error.details()
    error = rpc_error(bridge.init, {"backend": "keyvault", "vaultName": "prodvault",
                                    "disableChallengeResourceVerification": "true"})
    assert "disableChallengeResourceVerification" in error.details()
    error = rpc_error(bridge.init, {"backend": "keyvault"})
    assert "vaultName" in error.details() and "vaultUri" in error.details()


def test_fail_fast_init_checks_the_vault(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    bridge.init(keyvault(fake_vault, failFast="true"))
    fake_vault.forbid()
    error = rpc_error(bridge.init, keyvault(fake_vault, failFast="true"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_no_secret_token_or_header_in_errors_or_logs(
    bridge: Bridge, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity, caplog: pytest.LogCaptureFixture
) -> None:
    values = {f"k{i}": f"very-secret-value-{i}" for i in range(6)}
    for name, value in values.items():
        fake_vault.set_secret(name, value)
    fake_vault.set_secret("off", "very-secret-disabled", enabled=False)
    # The doubles quote the token, the identity header and a broken secret's value in their errors.
    fake_vault.echo_requests = True
    fake_identity.echo_credentials = True
    details: list[str] = []
    with caplog.at_level(logging.DEBUG):
        bridge.init(keyvault(fake_vault, azureClientId="cid", bulkSkipErrors="true"))
        assert len(bridge.bulk_get()) == 6
        for name in ("off", "missing", "bad_name"):
            details.append(rpc_error(bridge.get, name).details())
        fake_vault.break_secret("k2", 500)
        assert len(bridge.bulk_get()) == 5
        bridge.init(keyvault(fake_vault, azureClientId="cid", cacheTTL="0", maxRetries="0"))
        details.append(rpc_error(bridge.get, "k2").details())
        fake_vault.fail(1, 503)
        details.append(rpc_error(bridge.get, "k5").details())
        fake_vault.forbid()
        details.append(rpc_error(bridge.get, "k1").details())
        fake_vault.forbid(False)
        fake_identity.tokens.revoke_all()
        details.append(rpc_error(bridge.get, "k3").details())
        fake_identity.fail(5, 500)
        bridge.init(keyvault(fake_vault, azureClientId="cid3", maxRetries="0"))
        details.append(rpc_error(bridge.get, "k0").details())
        fake_identity.go_down()
        bridge.init(keyvault(fake_vault, azureClientId="cid2"))
        details.append(rpc_error(bridge.get, "k4").details())
    text = "\n".join(details) + caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    assert "[redacted]" in text  # a quoted header reached an error message, and was scrubbed
    for secret in [*values.values(), "very-secret-disabled", fake_identity.identity_header,
                   *fake_identity.issued()]:
        assert secret not in text


def test_no_private_key_in_errors_or_logs(
    bridge: Bridge, fake_vault: FakeKeyVault, caplog: pytest.LogCaptureFixture
) -> None:
    """Certificates' secrets hold private keys: a vault error quoting the value, a PKCS#12 that will not
    parse, a key that belongs to no certificate, all at DEBUG, in Get and BulkGet: not a byte of either
    key reaches a message or a log line."""
    from tests.fakes.pki import make_chain, pem_of

    good, other = make_chain("rsa"), make_chain("ec")
    p12 = good.pkcs12_base64()
    fake_vault.set_certificate("tls-quoted", p12, content_type="application/x-pkcs12", cer=None, jwk=None)
    fake_vault.set_certificate("tls-mismatch", other.key_pem + pem_of(good.leaf),
                               content_type="application/x-pem-file", cer=None, jwk=None)
    fake_vault.set_secret("tls-truncated", p12[:400], content_type="application/x-pkcs12")
    fake_vault.echo_requests = True
    details: list[str] = []
    with caplog.at_level(logging.DEBUG):
        bridge.init(keyvault(fake_vault, certificateFormat="pem", bulkSkipErrors="true"))
        for name in ("tls-mismatch", "tls-truncated"):
            details.append(rpc_error(bridge.get, name).details())
        assert bridge.bulk_get({"format": "tls"}) == {
            "tls-quoted": {"tls.key": good.key_pem, "tls.crt": pem_of(good.leaf) + pem_of(good.intermediate)
                           + pem_of(good.root), "ca.crt": pem_of(good.intermediate) + pem_of(good.root)},
        }
        fake_vault.break_secret("tls-quoted", 500)  # its error now quotes the value, as a verbose proxy might
        bridge.init(keyvault(fake_vault, certificateFormat="pem", cacheTTL="0", maxRetries="0"))
        details.append(rpc_error(bridge.get, "tls-quoted").details())
        details.append(rpc_error(bridge.bulk_get).details())
    text = "\n".join(details) + caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    assert "tls-mismatch" in text and "tls-truncated" in text and "tls-quoted" in text
    material = [line for key in (good, other) for line in key.key_pem.splitlines()[1:-1]]
    material += [p12[i:i + 24] for i in range(0, len(p12) - 24, 24)]
    leaked = [piece for piece in material if piece in text]
    assert not leaked
