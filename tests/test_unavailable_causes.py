"""A vault or token endpoint that does not resolve, refuses or is not trusted reaches the app as
UNAVAILABLE naming the cause, at once, not as DEADLINE_EXCEEDED after the SDK's retries."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest
from azure.keyvault.secrets._shared import http_challenge_cache
from secretbridge.azure.causes import Cause, cause_of_message, classify_cause, describe_cause, health_verdict
from secretbridge.core.errors import PermissionDenied, Unavailable
from secretbridge.core.policy import OperatorPolicy

from tests.fakes import FakeKeyVault, FakeManagedIdentity, TestCertificates, vault_metadata
from tests.support import Bridge, serve_bridge

pytest_plugins = ("tests.fakes.fixtures",)

# Three retries back off 0 + 1.6 + 3.2 s: past this timeout unless the cause stops them.
SLOW_TO_GIVE_UP = {"maxRetries": "3", "requestTimeout": "3s", "cacheTTL": "0", "negativeCacheTTL": "0",
                   "maxStale": "0"}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unavailable(bridge: Bridge, metadata: dict[str, str], instance: str) -> str:
    bridge.init({"backend": "keyvault", "disableChallengeResourceVerification": "true", **SLOW_TO_GIVE_UP,
                 **metadata}, instance=instance)
    with pytest.raises(grpc.RpcError) as caught:
        bridge.get("db-password", instance=instance, timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    details = str(caught.value.details())
    assert "db-password" in details
    assert bridge.server is not None
    verbose = bridge.server.readiness(verbose=True)[1]["instances"][instance]
    assert cause_of_message(verbose["cause"]) == cause_of_message(details)
    # /readyz?verbose gives the doctor's verdict for the instance, once its backend is known down.
    assert verbose["backend_up"] is False
    assert verbose["verdict"] == str(cause_of_message(details))
    return details


def test_a_vault_host_that_does_not_resolve(fake_identity: FakeManagedIdentity) -> None:
    with serve_bridge(policy=OperatorPolicy(vault_hosts=frozenset({("kv-runtime.invalid", None)}))) as bridge:
        details = unavailable(bridge, {"vaultUri": "https://kv-runtime.invalid"}, "dns")
    assert "cannot resolve host kv-runtime.invalid" in details
    assert cause_of_message(details) is Cause.DNS


def test_a_vault_that_refuses_connections(bridge: Bridge, fake_identity: FakeManagedIdentity) -> None:
    port = closed_port()
    details = unavailable(bridge, {"vaultUri": f"https://127.0.0.1:{port}"}, "refused")
    assert f"connection refused by 127.0.0.1:{port}" in details
    assert cause_of_message(details) is Cause.REFUSED


def test_a_vault_whose_certificate_is_not_trusted(
    bridge: Bridge, fake_identity: FakeManagedIdentity, tmp_path: Path
) -> None:
    http_challenge_cache.clear()
    with FakeKeyVault(TestCertificates(tmp_path / "other-ca"), identity=fake_identity) as vault:
        details = unavailable(bridge, {"vaultUri": vault.url}, "tls")
    assert f"TLS handshake with 127.0.0.1:{vault.port} failed: certificate not trusted" in details
    assert cause_of_message(details) is Cause.TLS


def test_a_token_endpoint_that_refuses_connections(
    bridge: Bridge, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity
) -> None:
    fake_vault.set_secret("db-password", "runtime-distinctive-value")
    fake_identity.go_down()
    details = unavailable(bridge, vault_metadata(fake_vault, **SLOW_TO_GIVE_UP), "token")
    assert "could not get a token for the system-assigned managed identity" in details
    assert f"connection refused by 127.0.0.1:{fake_identity.port} (the token endpoint)" in details
    assert fake_identity.identity_header not in details and "runtime-distinctive-value" not in details


def test_a_token_endpoint_that_does_not_resolve(
    bridge: Bridge, fake_vault: FakeKeyVault, azure_env: pytest.MonkeyPatch
) -> None:
    azure_env.setenv("IDENTITY_ENDPOINT", "http://identity-runtime.invalid/msi/token")
    azure_env.setenv("IDENTITY_HEADER", "runtime-distinctive-header")
    details = unavailable(bridge, vault_metadata(fake_vault, **SLOW_TO_GIVE_UP), "token-dns")
    assert "cannot resolve host identity-runtime.invalid" in details
    assert "runtime-distinctive-header" not in details


def test_classify_cause_reads_the_whole_chain() -> None:
    def chained(inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except BaseException as exc:
                raise RuntimeError("wrapper") from exc
        except RuntimeError as outer:
            return outer

    assert classify_cause(chained(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))) is Cause.DNS
    assert classify_cause(chained(ConnectionRefusedError(111, "refused"))) is Cause.REFUSED
    assert classify_cause(chained(TimeoutError())) is Cause.TIMEOUT
    assert classify_cause(RuntimeError("no cause")) is Cause.OTHER
    assert classify_cause(None) is Cause.OTHER
    assert describe_cause(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "kv.example") == \
        "cannot resolve host kv.example (Name or service not known)"
    assert describe_cause(RuntimeError("x")) is None


def test_health_verdict_for_readiness() -> None:
    assert health_verdict(None) == ("ok", None)
    assert health_verdict(Unavailable("x", cause="refused")) == ("fail", Cause.REFUSED)
    assert health_verdict("cannot reach Key Vault 'kv' to read secret 'a': cannot resolve host kv.invalid") == \
        ("fail", Cause.DNS)
    assert health_verdict("no answer within 2s") == ("fail", Cause.TIMEOUT)
    assert health_verdict(PermissionDenied("the identity may not read secret 'a' in Key Vault 'kv' (403 "
                                           "Forbidden/AccessDenied): the vault uses access policies; ...")) == \
        ("fail", Cause.FORBIDDEN_ACCESS_POLICY)
    assert health_verdict("something else") == ("fail", Cause.OTHER)
