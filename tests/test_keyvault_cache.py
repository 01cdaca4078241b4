"""Cache and resilience end to end: the real keyvault backend, the Key Vault test double, counted vault calls.

Behaviour, not timing: TTLs are crossed by moving the instance's cache clock (`move_time`), never by
sleeping; other waits are bounded polls; nothing asserts how long a call took.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from secretbridge.runtime.metrics import STALE_SERVED

from tests.fakes import FakeKeyVault, FakeManagedIdentity, vault_metadata
from tests.support import Bridge, eventually, move_time

pytest_plugins = ("tests.fakes.fixtures",)


def keyvault(vault: FakeKeyVault, **extra: str) -> dict[str, str]:
    return {"backend": "keyvault", "maxRetries": "1", **vault_metadata(vault, **extra)}


def test_concurrent_cold_reads_of_one_secret_cost_one_vault_call(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_secret("db-password", "v1")
    bridge.init(keyvault(fake_vault))
    fake_vault.set_latency(0.3)  # long enough that every reader arrives while the first read is out
    fake_vault.reset_counters()
    start = threading.Barrier(50)

    def read(_: int) -> dict[str, str]:
        start.wait()
        return bridge.get("db-password")

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(read, range(50)))
    assert results == [{"db-password": "v1"}] * 50
    assert fake_vault.count("get") == 1


def test_a_thousand_reads_of_a_hundred_hot_secrets_cost_a_hundred_vault_calls(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    for i in range(100):
        fake_vault.set_secret(f"hot-{i}", f"value-{i}")
    bridge.init(keyvault(fake_vault, cacheTTL="5m"))
    fake_vault.reset_counters()
    for n in range(1000):
        assert bridge.get(f"hot-{n % 100}") == {f"hot-{n % 100}": f"value-{n % 100}"}
    assert fake_vault.count("get") == 100


def test_rotation_is_seen_within_the_ttl(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_secret("rotating", "old")
    # staleWait: however busy the machine, the read past the TTL waits for the vault's answer.
    bridge.init(keyvault(fake_vault, cacheTTL="3s", staleWait="10s"))
    clock = move_time(bridge)
    assert bridge.get("rotating") == {"rotating": "old"}
    fake_vault.set_secret("rotating", "new")
    clock.advance(2.9)
    assert bridge.get("rotating") == {"rotating": "old"}  # still within the TTL
    clock.advance(0.2)
    assert bridge.get("rotating") == {"rotating": "new"}


def test_a_missing_secret_asked_for_in_a_loop_costs_one_vault_call(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    bridge.init(keyvault(fake_vault, negativeCacheTTL="1m"))
    fake_vault.reset_counters()
    for _ in range(25):
        with pytest.raises(grpc.RpcError) as err:
            bridge.get("typo-password")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert fake_vault.count("get") == 1


def test_bulk_results_are_hits_for_later_gets(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    for i in range(30):
        fake_vault.set_secret(f"s-{i}", str(i))
    bridge.init(keyvault(fake_vault, cacheTTL="5m"))
    assert len(bridge.bulk_get()) == 30
    fake_vault.reset_counters()
    for i in range(30):
        assert bridge.get(f"s-{i}") == {f"s-{i}": str(i)}
    assert fake_vault.count("get") == 0


def test_stale_values_are_served_through_an_outage_then_surface_past_max_stale(
    bridge: Bridge, fake_vault: FakeKeyVault, caplog: pytest.LogCaptureFixture
) -> None:
    fake_vault.set_secret("db-password", "last-good-value")
    bridge.init(keyvault(fake_vault, cacheTTL="30s", maxStale="1m", requestTimeout="10s"), instance="outage")
    clock = move_time(bridge, "outage")
    assert bridge.get("db-password", instance="outage") == {"db-password": "last-good-value"}
    served = STALE_SERVED.labels("outage", "keyvault")._value.get()
    fake_vault.go_down()
    clock.advance(31)  # past the TTL
    with caplog.at_level(logging.WARNING):
        assert bridge.get("db-password", instance="outage") == {"db-password": "last-good-value"}
    assert STALE_SERVED.labels("outage", "keyvault")._value.get() == served + 1
    assert any(getattr(r, "instance", None) == "outage" and r.getMessage().startswith("backend failing")
               for r in caplog.records)

    clock.advance(60)  # 91 s past the TTL: past maxStale
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("db-password", instance="outage")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert "maxStale" in err.value.details() and "db-password" in err.value.details()
    assert "last-good-value" not in caplog.text
    fake_vault.come_up()
    assert eventually(lambda: _answers(bridge, "outage"), within=8.0)


def _answers(bridge: Bridge, instance: str) -> bool:
    try:
        return bridge.get("db-password", instance=instance) == {"db-password": "last-good-value"}
    except grpc.RpcError:
        return False


def test_the_token_endpoint_down_is_survived_on_stale_values(
    bridge: Bridge, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity
) -> None:
    fake_vault.set_secret("db-password", "v")
    bridge.init(keyvault(fake_vault, cacheTTL="30s", requestTimeout="10s"))
    clock = move_time(bridge)
    assert bridge.get("db-password") == {"db-password": "v"}
    fake_identity.go_down()
    fake_vault.go_down()
    clock.advance(31)
    assert bridge.get("db-password") == {"db-password": "v"}


def test_throttling_with_retry_after_is_waited_out(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_secret("busy", "v")
    bridge.init(keyvault(fake_vault, maxRetries="3", requestTimeout="10s"))
    bridge.get("busy")  # the challenge and the token are out of the way
    bridge.init(keyvault(fake_vault, maxRetries="3", requestTimeout="10s"))  # a cold cache
    fake_vault.reset_counters()
    fake_vault.throttle(2, retry_after=0.5)
    assert bridge.get("busy") == {"busy": "v"}
    assert fake_vault.count("throttled") == 2 and fake_vault.count("get") == 1  # two 429s, then the answer


def test_hot_keys_are_refreshed_in_the_background_before_they_expire(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    fake_vault.set_secret("hot", "v1")
    bridge.init(keyvault(fake_vault, cacheTTL="30s"))
    clock = move_time(bridge)
    assert bridge.get("hot") == {"hot": "v1"}
    fake_vault.reset_counters()
    fake_vault.set_secret("hot", "v2")
    clock.advance(27)  # inside the last fifth of the TTL (24 s to 30 s)
    assert bridge.get("hot") == {"hot": "v1"}  # answered from the cache at once ...
    assert eventually(lambda: fake_vault.count("get") == 1, within=5.0)  # ... and refreshed behind it
    assert eventually(lambda: bridge.get("hot") == {"hot": "v2"}, within=5.0)


def test_fail_fast_makes_init_fail_when_the_vault_is_unreachable(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    fake_vault.go_down()
    with pytest.raises(grpc.RpcError) as err:
        bridge.init(keyvault(fake_vault, failFast="true", requestTimeout="20s", maxRetries="0"))
    # Refused connections: UNAVAILABLE (a slow vault is DEADLINE_EXCEEDED, see test_error_codes.py).
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert "Init" in err.value.details() and "cannot reach" in err.value.details()
    # Without failFast the instance starts, and readiness says the backend is not there yet.
    bridge.init(keyvault(fake_vault, requestTimeout="2s", maxRetries="0"))
    assert bridge.server is not None
    assert eventually(lambda: not bridge.server.readiness()[0], within=5.0)  # type: ignore[union-attr]
    fake_vault.come_up()
    assert eventually(lambda: bridge.server.readiness()[0], within=15.0)  # type: ignore[union-attr]


def test_shutdown_lets_in_flight_calls_finish(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_secret("slow", "value")
    bridge.init(keyvault(fake_vault))
    bridge.get("slow")  # challenge and token out of the way
    bridge.init(keyvault(fake_vault, cacheTTL="0"))
    fake_vault.set_latency(1.0)
    fake_vault.reset_counters()
    answers: list[dict[str, str]] = []
    reader = threading.Thread(target=lambda: answers.append(bridge.get("slow")))
    reader.start()
    # The read itself, not the readiness probe an Init starts, must be at the vault and unanswered.
    assert eventually(lambda: fake_vault.reads_in_flight >= 1, within=5.0)
    assert fake_vault.count("get") == 0, "the read must still be in flight"
    assert bridge.server is not None
    bridge.server.stop()
    reader.join(10)
    assert answers == [{"slow": "value"}]
    assert not bridge.socket_path.exists()


def test_a_call_in_flight_during_reinit_finishes_on_the_old_instance(
    bridge: Bridge, fake_vault: FakeKeyVault, caplog: pytest.LogCaptureFixture
) -> None:
    # daprd's hot reload calls Init again while the app may be mid-read.
    fake_vault.set_secret("slow", "value")
    bridge.init(keyvault(fake_vault, cacheTTL="0"))
    bridge.get("slow")  # challenge and token out of the way
    fake_vault.set_latency(1.0)
    fake_vault.reset_counters()
    answers: list[dict[str, str]] = []
    reader = threading.Thread(target=lambda: answers.append(bridge.get("slow")))
    reader.start()
    assert eventually(lambda: fake_vault.reads_in_flight >= 1, within=5.0)
    assert fake_vault.count("get") == 0, "the read must still be in flight"
    with caplog.at_level(logging.ERROR):
        bridge.init(keyvault(fake_vault, cacheTTL="0"))
        reader.join(10)
    assert answers == [{"slow": "value"}]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
