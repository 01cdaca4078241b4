"""Reads through a vault outage: a caller that can be answered from a held value never waits on a
failing vault (RFC 5861's stale-while-revalidate and stale-if-error; DESIGN.md "Cache and resilience").

Through the real server on a real socket, the real keyvault backend and the Key Vault double. No
timing is asserted: the double holds requests open (`hold`) until the test releases them, so a read
that comes back while the vault's request is still held did not wait for it. TTLs are crossed by
moving the instance's cache clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from secretbridge.runtime.metrics import STALE_SERVED

from tests.fakes import FakeKeyVault, FakeManagedIdentity, vault_metadata
from tests.support import Bridge, MovedClock, eventually, move_time, serve_bridge

pytest_plugins = ("tests.fakes.fixtures",)

#: Long enough that a read answered before it ran out was answered because the vault was known to
#: be failing, not because the bound ran out.
LONG_WAIT = "1h"


def keyvault(vault: FakeKeyVault, **extra: str) -> dict[str, str]:
    return {"backend": "keyvault", **vault_metadata(vault, **{"cacheTTL": "30s", "requestTimeout": "1h", **extra})}


def stale_count(instance: str) -> float:
    return float(STALE_SERVED.labels(instance, "keyvault")._value.get())


def held(bridge: Bridge, fake_vault: FakeKeyVault, instance: str, name: str = "db", **extra: str) -> MovedClock:
    """`name` = "old" in the vault, an instance on it (`extra`: its metadata) holding that value, and its
    cache's clock."""
    fake_vault.set_secret(name, "old")
    bridge.init(keyvault(fake_vault, **extra), instance=instance)
    clock = move_time(bridge, instance)
    assert bridge.get(name, instance=instance) == {name: "old"}
    return clock


@pytest.fixture
def small_bridge() -> Iterator[Bridge]:
    """A server with 16 workers: one instance's share is 14."""
    with serve_bridge(workers=16, shutdown_grace=1.0) as bridge:
        yield bridge


def test_a_hung_vault_does_not_hold_a_read_past_stale_wait(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    clock = held(bridge, fake_vault, "hung")
    fake_vault.set_secret("db", "new")  # rotated; the vault then hangs
    fake_vault.hang()
    clock.advance(31)
    stale = stale_count("hung")
    assert bridge.get("db", instance="hung") == {"db": "old"}  # the held value, after staleWait at most
    assert eventually(lambda: fake_vault.held == 1)  # ... while the refresh it started is still unanswered
    assert stale_count("hung") == stale + 1
    assert bridge.get("db", instance="hung") == {"db": "old"}
    assert fake_vault.held == 1  # single flight: the second read joined the same refresh
    fake_vault.release()
    assert eventually(lambda: bridge.get("db", instance="hung") == {"db": "new"})  # the rotation lands


@pytest.mark.parametrize("fault", ["503", "429"])
def test_the_first_failed_attempt_answers_the_waiting_read(
    bridge: Bridge, fake_vault: FakeKeyVault, fault: str
) -> None:
    # staleWait of an hour: only knowing the vault is failing can answer the read.
    clock = held(bridge, fake_vault, f"fault-{fault}", staleWait=LONG_WAIT, maxRetries="3")
    if fault == "503":
        fake_vault.fail(1, 503)
    else:
        fake_vault.throttle(1, retry_after=0)
    fake_vault.hold(skip=1)  # the first attempt is answered with the fault; its retry is held
    clock.advance(31)
    assert bridge.get("db", instance=f"fault-{fault}") == {"db": "old"}
    assert eventually(lambda: fake_vault.held == 1)
    assert fake_vault.count("failed" if fault == "503" else "throttled") == 1
    # Known failing now: another expired key is answered at once, even on the worker's fast path.
    assert bridge.get("db", instance=f"fault-{fault}") == {"db": "old"}
    fake_vault.release()  # the refresh's retry is answered: the vault is not failing any more
    assert bridge.server is not None
    found = bridge.server.instances.find(f"fault-{fault}")
    assert found is not None and found.cached is not None
    assert eventually(lambda: found.cached is not None and found.cached.failing() is None)


@pytest.mark.parametrize("style", ["appservice", "imds"])
def test_a_failing_token_endpoint_answers_the_waiting_read(
    bridge: Bridge, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity, azure_env: pytest.MonkeyPatch,
    style: str,
) -> None:
    # Container Apps and App Service (IDENTITY_ENDPOINT), and VMs and AKS (IMDS, whose credential
    # brings its own retry policy): the first failed token request is enough to know.
    if style == "imds":
        for name in fake_identity.env():
            azure_env.delenv(name)
        for name, value in fake_identity.env("imds").items():
            azure_env.setenv(name, value)
    fake_identity.lifetime = 1  # the token expires at once: the refresh must ask for another
    clock = held(bridge, fake_vault, "token", staleWait=LONG_WAIT, maxRetries="3")
    asked = len(fake_identity.requests)
    time.sleep(2)  # let the token expire (a wait, not a measurement)
    fake_identity.fail(math.inf, 500)
    fake_identity.hold(skip=1)  # the first token request fails; its retry is held
    clock.advance(31)
    assert bridge.get("db", instance="token") == {"db": "old"}
    assert eventually(lambda: fake_identity.held == 1)
    assert len(fake_identity.requests) == asked + 1  # one failed attempt was enough to know
    fake_identity.fail(0)
    fake_identity.release()


def test_sixty_four_readers_of_expired_keys_during_an_outage_all_get_values(
    small_bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    bridge = small_bridge
    names = [f"key-{n}" for n in range(64)]
    for name in names:
        fake_vault.set_secret(name, f"value-{name}")
    bridge.init(keyvault(fake_vault), instance="crowd")
    clock = move_time(bridge, "crowd")
    for name in names:
        assert bridge.get(name, instance="crowd") == {name: f"value-{name}"}
    fake_vault.hang()  # the outage starts: nothing the vault is asked is answered
    clock.advance(31)  # every key is past its TTL

    def read(name: str) -> object:
        try:
            return bridge.get(name, instance="crowd", timeout=120)
        except grpc.RpcError as err:
            return err.code()

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(read, names))
    assert answers == [{name: f"value-{name}"} for name in names]  # none RESOURCE_EXHAUSTED, four times the share
    assert eventually(lambda: fake_vault.held > 0)  # ... all while the vault held the refreshes
    fake_vault.release()


def test_a_deleted_secret_is_not_served_stale_once_the_vault_says_404(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    clock = held(bridge, fake_vault, "deleted", "gone", negativeCacheTTL="0", maxStale="1h")
    fake_vault.delete("gone")
    clock.advance(31)

    def code() -> grpc.StatusCode | None:
        try:
            bridge.get("gone", instance="deleted")
        except grpc.RpcError as err:
            return err.code()
        return None

    assert eventually(lambda: code() == grpc.StatusCode.NOT_FOUND)
    # The vault said so: the old value is gone for good, even when the vault then fails.
    fake_vault.go_down()
    clock.advance(5)
    assert code() == grpc.StatusCode.UNAVAILABLE


def test_a_disabled_secret_is_not_served_stale_once_the_vault_says_so(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    clock = held(bridge, fake_vault, "disabled", "off", staleWait=LONG_WAIT)
    fake_vault.disable("off")
    clock.advance(31)
    asked = fake_vault.count("get")
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as err:
            bridge.get("off", instance="disabled")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "disabled" in (err.value.details() or "")
    # The decision is remembered for negativeCacheTTL: an app that keeps asking does not hammer the vault.
    assert fake_vault.count("get") == asked + 1
    clock.advance(6)  # past negativeCacheTTL (5 s)
    fake_vault.fail(math.inf, 503)
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("off", instance="disabled")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    fake_vault.fail(0)


def test_what_one_instance_learns_of_a_failing_vault_every_instance_on_that_vault_knows(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    fake_vault.set_secret("db", "old")
    for name in ("first", "second"):
        bridge.init(keyvault(fake_vault, staleWait=LONG_WAIT), instance=name)
    clocks = {name: move_time(bridge, name) for name in ("first", "second")}
    for name in clocks:
        assert bridge.get("db", instance=name) == {"db": "old"}
    fake_vault.fail(1, 503)
    fake_vault.hold(skip=1)
    clocks["first"].advance(31)
    assert bridge.get("db", instance="first") == {"db": "old"}  # its refresh met the 503
    assert eventually(lambda: fake_vault.held == 1)
    clocks["second"].advance(31)
    assert bridge.get("db", instance="second") == {"db": "old"}  # at once: the vault is known to be failing
    fake_vault.release()


def test_a_failing_vault_is_asked_by_one_probe_at_a_time_not_once_per_expired_key(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    # Two instances on one vault, ten keys each: during the outage every read is answered from
    # what is held, and the vault is asked by one refresh at a time for the pair (core/probes.py),
    # one a second at most, not once per expired key and again after each retry delay.
    keys = {instance: [f"{instance}-{n}" for n in range(10)] for instance in ("east", "west")}
    clocks = {}
    for instance, names in keys.items():
        for name in names:
            fake_vault.set_secret(name, "v1")
        bridge.init(keyvault(fake_vault, maxRetries="0"), instance=instance)
        clocks[instance] = move_time(bridge, instance)
        for name in names:
            assert bridge.get(name, instance=instance) == {name: "v1"}
    fake_vault.fail(math.inf, 503)
    for clock in clocks.values():
        clock.advance(31)
    before = fake_vault.count("failed")
    for _ in range(3):
        for instance, names in keys.items():
            for name in names:
                assert bridge.get(name, instance=instance) == {name: "v1"}
    asked = fake_vault.count("failed") - before
    # One per key would be 20 (the first read of each key starting its refresh); a probe a second
    # over 60 local reads is a handful even on a slow machine.
    assert 1 <= asked <= 5, asked
    fake_vault.set_secret("east-0", "v2")  # rotated during the outage
    fake_vault.fail(0)  # the vault is back: the next probe finds it, and the rotation is read
    assert eventually(lambda: bridge.get("east-0", instance="east") == {"east-0": "v2"})
    assert bridge.get("west-0", instance="west") == {"west-0": "v1"}


def three_secrets(bridge: Bridge, fake_vault: FakeKeyVault, instance: str, **extra: str) -> MovedClock:
    """s-0, s-1, s-2 in the vault, an instance on it, and its cache's clock."""
    for n in range(3):
        fake_vault.set_secret(f"s-{n}", f"v-{n}")
    bridge.init(keyvault(fake_vault, **extra), instance=instance)
    return move_time(bridge, instance)


def test_bulk_get_answers_its_held_listing_while_the_vault_holds_the_refresh(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    clock = three_secrets(bridge, fake_vault, "bulk-hung")
    every = bridge.bulk_get(instance="bulk-hung")
    assert every == {f"s-{n}": {f"s-{n}": f"v-{n}"} for n in range(3)}
    fake_vault.hang()
    clock.advance(31)
    assert bridge.bulk_get(instance="bulk-hung") == every
    assert eventually(lambda: fake_vault.held >= 1)  # the refresh's listing is still unanswered
    fake_vault.release()


def test_bulk_get_answers_held_values_for_the_secrets_it_cannot_read_and_fails_only_for_the_rest(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    clock = three_secrets(bridge, fake_vault, "bulk-partial", staleWait=LONG_WAIT)
    for n in range(2):  # s-0 and s-1 are held (read by Get); s-2 never was
        assert bridge.get(f"s-{n}", instance="bulk-partial") == {f"s-{n}": f"v-{n}"}
    fake_vault.set_secret("s-0", "rotated")
    fake_vault.break_secret("s-1", 503)  # the vault lists it but cannot read it
    clock.advance(31)
    every = bridge.bulk_get(instance="bulk-partial")
    assert every == {"s-0": {"s-0": "rotated"}, "s-1": {"s-1": "v-1"}, "s-2": {"s-2": "v-2"}}
    # Now s-2 cannot be read either; it is held (the BulkGet primed it), so it is answered too.
    fake_vault.break_secret("s-2", 503)
    clock.advance(31)
    assert bridge.bulk_get(instance="bulk-partial")["s-2"] == {"s-2": "v-2"}
    # A secret with nothing held that cannot be read fails the call, which says how many and why.
    fake_vault.set_secret("s-3", "new")
    fake_vault.break_secret("s-3", 503)
    bridge.init(keyvault(fake_vault, staleWait=LONG_WAIT), instance="bulk-partial")  # a cold cache
    with pytest.raises(grpc.RpcError) as err:
        bridge.bulk_get(instance="bulk-partial")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    details = err.value.details() or ""
    assert "could not read 3 of the 4 secrets" in details and "no value is held" in details, details
    assert "503" in details


def test_an_attempt_that_outlives_its_share_of_request_timeout_marks_the_vault_failing(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    # Eleven attempts share requestTimeout: one unanswered for 1 s marks the vault failing.
    clock = held(bridge, fake_vault, "share", staleWait=LONG_WAIT, requestTimeout="11s", maxRetries="10")
    fake_vault.hang()
    clock.advance(31)
    # Answered once the attempt outlived its share, long before the call's own requestTimeout.
    assert bridge.get("db", instance="share", timeout=8) == {"db": "old"}
    assert eventually(lambda: fake_vault.held == 1)
    fake_vault.release()


def assert_rotation_lands(bridge: Bridge, clock: MovedClock, instance: str) -> None:
    """Once the identity is accepted again, the refresh brings the value the vault holds now."""
    clock.advance(31)
    assert eventually(lambda: bridge.get("db", instance=instance) == {"db": "new"})


@pytest.mark.parametrize("status", [400, 401])
def test_a_held_value_is_served_while_the_token_endpoint_refuses_the_identity(
    bridge: Bridge, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity, status: int
) -> None:
    """A refused identity (an incident of the identity, not of the secret) does not take held values away."""
    fake_identity.lifetime = 1  # the token expires at once: the refresh must ask for another
    instance = f"idrefused-{status}"
    clock = held(bridge, fake_vault, instance, staleWait=LONG_WAIT)
    time.sleep(2)  # let the token expire (a wait, not a measurement)
    fake_identity.fail(math.inf, status)
    fake_vault.set_secret("db", "new")
    served = stale_count(instance)
    clock.advance(31)
    for _ in range(3):
        assert bridge.get("db", instance=instance) == {"db": "old"}
    assert stale_count(instance) >= served + 3
    fake_identity.fail(0)
    assert_rotation_lands(bridge, clock, instance)


def test_a_held_value_is_served_while_the_vault_refuses_a_valid_token(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    clock = held(bridge, fake_vault, "tokenrefused", staleWait=LONG_WAIT)
    fake_vault.refuse_tokens()
    fake_vault.set_secret("db", "new")
    clock.advance(31)
    for _ in range(3):
        assert bridge.get("db", instance="tokenrefused") == {"db": "old"}
    found = bridge.server.instances.find("tokenrefused")
    assert found is not None and found.cached is not None
    assert found.cached.failing() is not None  # known as failing: later reads do not wait on the vault
    # With nothing held, the refusal is the answer, and it names the cause.
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("never-read", instance="tokenrefused")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "refused the token" in (err.value.details() or "")
    fake_vault.refuse_tokens(False)
    assert_rotation_lands(bridge, clock, "tokenrefused")


def test_a_secret_whose_access_is_revoked_is_not_served_stale(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    """403 for the secret: the operator removed the grant and means it now, not after maxStale."""
    clock = held(bridge, fake_vault, "revoked", staleWait=LONG_WAIT, maxStale="1h")
    fake_vault.forbid()
    clock.advance(31)
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("db", instance="revoked")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    fake_vault.forbid(False)
    clock.advance(6)  # past negativeCacheTTL (5 s), which remembers the refusal
    fake_vault.fail(math.inf, 503)  # the old value is gone for good, even when the vault then fails
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("db", instance="revoked")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    fake_vault.fail(0)
