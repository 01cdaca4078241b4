"""`/readyz` keeps the pod in service while it can answer; backend health goes to a metric and the verbose form.

Time is moved with the injected clock of the instances, never slept through.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY
from secretbridge.runtime.readiness import safe_cause
from secretbridge.runtime.server import SecretBridgeServer

from tests import support
from tests.fakes import FakeKeyVault, FakeManagedIdentity, vault_metadata
from tests.support import Bridge, serve_bridge

pytest_plugins = ("tests.fakes.fixtures",)

CLIENT_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e8f7a6b5c4d"


class Clock:
    """A monotonic clock the test moves forward."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def eventually(check: Callable[[], bool]) -> bool:
    return support.eventually(check, within=20.0)


def server_of(bridge: Bridge) -> SecretBridgeServer:
    assert bridge.server is not None
    return bridge.server


def keyvault(vault: FakeKeyVault, **extra: str) -> dict[str, str]:
    return {"backend": "keyvault", **vault_metadata(vault, maxRetries="0", requestTimeout="1s", **extra)}


def verbose(bridge: Bridge, instance: str = "default") -> dict[str, object]:
    entry = server_of(bridge).readiness(verbose=True)[1]["instances"][instance]
    assert isinstance(entry, dict)
    return entry


def backend_up(instance: str) -> float | None:
    return REGISTRY.get_sample_value("secretbridge_backend_up", {"instance": instance, "backend": "keyvault"})


@pytest.fixture
def clocked() -> Iterator[tuple[Bridge, Clock]]:
    with serve_bridge() as bridge:
        clock = Clock()
        server_of(bridge).instances.clock = clock
        yield bridge, clock


def test_a_down_backend_whose_cache_still_serves_leaves_the_pod_ready(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    fake_vault.set_secret("db", "v1")
    bridge.init(keyvault(fake_vault, cacheTTL="1h"), instance="cached")
    instance = server_of(bridge).instances.find("cached")
    assert instance is not None and instance.cached is not None
    clock = Clock()
    instance.cached.clock = clock
    assert bridge.get("db", instance="cached") == {"db": "v1"}
    assert backend_up("cached") == 1
    fake_vault.go_down()
    # Every read is a hit; readiness checks a backend nothing reached for a while, and learns it is down.
    clock.advance(31)
    assert eventually(lambda: verbose(bridge, "cached")["backend_up"] is False)
    ready, body = server_of(bridge).readiness()
    assert ready and body["instances"] == {"cached": "serving stale"}
    assert backend_up("cached") == 0
    assert verbose(bridge, "cached")["cause"]
    assert bridge.get("db", instance="cached") == {"db": "v1"}


def test_a_vault_that_never_answered_holds_readiness_back_only_for_the_grace(
    clocked: tuple[Bridge, Clock], fake_vault: FakeKeyVault
) -> None:
    bridge, clock = clocked
    fake_vault.go_down()
    bridge.init(keyvault(fake_vault))
    assert eventually(lambda: verbose(bridge)["backend_up"] is False)
    assert server_of(bridge).readiness() == (False, {"instances": {"default": "backend down"}})
    clock.advance(server_of(bridge).options.ready_grace - 1)
    assert not server_of(bridge).readiness()[0]
    clock.advance(2)
    ready, body = server_of(bridge).readiness()
    assert ready, "a Component pointing at a dead vault must not make the sidecar permanently unready"
    assert body["instances"] == {"default": "backend down"}
    assert verbose(bridge)["counted"] is False
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("db")
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_a_backend_back_after_the_grace_makes_the_instance_ready(
    clocked: tuple[Bridge, Clock], fake_vault: FakeKeyVault
) -> None:
    bridge, clock = clocked
    fake_vault.set_secret("db", "v1")
    fake_vault.go_down()
    bridge.init(keyvault(fake_vault))
    clock.advance(3600 * 2)
    fake_vault.come_up()
    assert eventually(lambda: verbose(bridge)["backend_up"] is True)
    assert server_of(bridge).readiness() == (True, {"instances": {"default": "ready"}})
    assert bridge.get("db") == {"db": "v1"}


def test_instances_not_called_for_long_stop_counting() -> None:
    with serve_bridge(ready_grace=10**9, idle_after=600.0) as bridge:
        clock = Clock()
        server_of(bridge).instances.clock = clock
        bridge.init({"backend": "keyvault", "vaultUri": "https://127.0.0.1:9", "disableChallengeResourceVerification":
                     "true", "requestTimeout": "1s", "maxRetries": "0"})
        assert not server_of(bridge).readiness()[0]
        clock.advance(599)
        assert not server_of(bridge).readiness()[0]
        clock.advance(2)
        assert server_of(bridge).readiness()[0], "an instance daprd may have forgotten no longer counts"
        assert verbose(bridge)["idle"] is True
        with pytest.raises(grpc.RpcError):
            bridge.get("db")  # a call makes it count again
        assert not server_of(bridge).readiness()[0]


def test_verbose_readiness_names_causes_but_no_client_id(
    bridge: Bridge, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity
) -> None:
    fake_identity.go_down()
    bridge.init(keyvault(fake_vault, azureClientId=CLIENT_ID))
    assert eventually(lambda: verbose(bridge)["backend_up"] is False)
    entry = verbose(bridge)
    text = json.dumps(server_of(bridge).readiness(verbose=True)[1])
    assert "identity" in str(entry["cause"])
    assert CLIENT_ID not in text
    # The same cause reaches the caller of Get with the client id: daprd's log is the operator's.
    assert "[redacted id]" in safe_cause(f"the user-assigned managed identity with client id {CLIENT_ID}")


def test_a_socket_that_is_gone_is_not_ready(bridge: Bridge, tmp_path: Path) -> None:
    secrets = tmp_path / "s.json"
    secrets.write_text('{"a": "b"}')
    bridge.init({"backend": "file", "secretsFile": str(secrets)})
    assert server_of(bridge).readiness() == (True, {"instances": {"default": "ready"}})
    bridge.socket_path.unlink()
    ready, body = server_of(bridge).readiness()
    assert not ready and body["socket"] == "not bound"


def test_max_instances_caps_the_total_with_an_error_naming_the_flag(tmp_path: Path) -> None:
    secrets = tmp_path / "s.json"
    secrets.write_text('{"a": "b"}')
    metadata = {"backend": "file", "secretsFile": str(secrets)}
    with serve_bridge(max_instances=2) as bridge:
        bridge.init(metadata, instance="one")
        bridge.init(metadata, instance="two")
        with pytest.raises(grpc.RpcError) as err:
            bridge.init(metadata, instance="three")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--max-instances" in err.value.details() and "(2)" in err.value.details()
        bridge.init(metadata, instance="one")  # a re-Init is no new instance
        assert bridge.get("a", instance="two") == {"a": "b"}


def test_past_max_stale_a_down_backend_holds_readiness_back_only_for_the_grace(
    clocked: tuple[Bridge, Clock], fake_vault: FakeKeyVault
) -> None:
    bridge, clock = clocked
    fake_vault.set_secret("db", "v1")
    bridge.init(keyvault(fake_vault, cacheTTL="1m", maxStale="10m"))
    instance = server_of(bridge).instances.find("default")
    assert instance is not None and instance.cached is not None
    instance.cached.clock = clock  # one clock for the cache and the instances
    assert bridge.get("db") == {"db": "v1"}
    fake_vault.go_down()
    clock.advance(60 + 5 * 60)  # past the TTL, within maxStale
    assert bridge.get("db") == {"db": "v1"}  # served stale; the backend is known to be down
    assert server_of(bridge).readiness() == (True, {"instances": {"default": "serving stale"}})
    clock.advance(5 * 60 + 10)  # just past maxStale: nothing left to serve
    with pytest.raises(grpc.RpcError):
        bridge.get("db")
    assert server_of(bridge).readiness() == (False, {"instances": {"default": "backend down"}})
    clock.advance(server_of(bridge).options.ready_grace + 1)
    assert server_of(bridge).readiness() == (True, {"instances": {"default": "backend down"}})
