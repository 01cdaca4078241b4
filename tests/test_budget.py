"""The per-vault request budget: AIMD concurrency, Retry-After for everyone, resends of 429s.

The budget's own rules run on an injected clock and sleep (time is moved, never waited for); the
end-to-end test runs the real keyvault backend against the fake vault enforcing a vault-wide limit
and asserts only outcomes (nothing failed, the 429s were waited out), never durations.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest
from secretbridge.azure.budget import VaultBudget, budget_for, retry_after_seconds
from secretbridge.azure.health import Health

from tests.fakes import FakeKeyVault, vault_metadata
from tests.support import Bridge

pytest_plugins = ("tests.fakes.fixtures",)


class FakeTime:
    """A clock the test owns; `sleep` moves it instead of waiting."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def budget(initial: int = 8, **kwargs: int) -> tuple[VaultBudget, FakeTime]:
    time = FakeTime()
    return VaultBudget("vault.test", initial=initial, clock=time.clock, sleep=time.sleep, **kwargs), time


async def test_a_429_halves_the_limit_once_per_episode_and_successes_grow_it_again() -> None:
    b, time = budget(initial=16)
    sent = [await b.acquire() for _ in range(10)]  # ten requests in flight when the vault says stop
    for _ in sent:
        b.release()
    b.throttled_by_vault(sent[0], retry_after=1.0)
    assert b.limit == 8
    # The other nine were sent before the first 429 came back: the same episode, not a new cut.
    for at in sent[1:]:
        b.throttled_by_vault(at, retry_after=1.0)
    assert b.limit == 8 and b.cuts == 1 and b.throttled == 10
    # A request sent after the cut that is throttled again is new evidence.
    time.now += 1.0
    later = await b.acquire()
    b.release()
    b.throttled_by_vault(later, retry_after=1.0)
    assert b.limit == 4 and b.cuts == 2
    for _ in range(40):
        b.succeeded()
    assert 4 + 5 < b.limit < 4 + 40  # additive: about one per round of `limit` answers


async def test_every_request_waits_out_retry_after_and_none_goes_before_it() -> None:
    b, time = budget()
    sent_at = await b.acquire()
    b.release()
    b.throttled_by_vault(sent_at, retry_after=2.5)
    admitted_at = await b.acquire()
    assert admitted_at >= 102.5
    assert sum(time.slept) == pytest.approx(2.5)


async def test_without_retry_after_the_pause_backs_off_exponentially_and_resets_on_success() -> None:
    b, time = budget()
    pauses = []
    for _ in range(3):
        sent_at = await b.acquire()
        b.release()
        start = time.now
        b.throttled_by_vault(sent_at, retry_after=None)
        pauses.append(b.paused_until - start)
    assert pauses == [1.0, 2.0, 4.0]
    b.succeeded()
    sent_at = await b.acquire()
    b.release()
    start = time.now
    b.throttled_by_vault(sent_at, retry_after=None)
    assert b.paused_until - start == 1.0


async def test_no_more_than_the_limit_are_in_flight_and_a_release_lets_the_next_one_go() -> None:
    b, _ = budget(initial=2)
    await b.acquire()
    await b.acquire()
    third = asyncio.create_task(b.acquire())
    await asyncio.sleep(0)
    assert not third.done() and b.in_flight == 2
    b.release()
    await asyncio.wait_for(third, 1)
    assert b.in_flight == 2


async def test_a_cancelled_waiter_does_not_take_a_slot_with_it() -> None:
    b, _ = budget(initial=1)
    await b.acquire()
    quitter = asyncio.create_task(b.acquire())
    patient = asyncio.create_task(b.acquire())
    await asyncio.sleep(0)
    quitter.cancel()
    b.release()
    await asyncio.wait_for(patient, 1)
    assert b.in_flight == 1


async def test_instances_on_one_vault_host_share_one_budget_and_other_hosts_do_not() -> None:
    assert budget_for("Vault-A.vault.azure.net") is budget_for("vault-a.vault.azure.net")
    assert budget_for("vault-a.vault.azure.net") is not budget_for("vault-b.vault.azure.net")


def test_retry_after_is_read_in_milliseconds_seconds_or_as_a_date() -> None:
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=lambda: 1445412480.0) == 10.0
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "soon"}) is None


@pytest.mark.timeout(120)
def test_bulk_gets_of_two_instances_against_a_vault_wide_limit_all_succeed(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    names = [f"limited-{i:03d}" for i in range(120)]
    for name in names:
        fake_vault.set_secret(name, f"value-of-{name}")
    # Far below what two BulkGets of 120 need (each sends 25 reads at once per page): both must
    # wait the vault out, not fail.
    fake_vault.limit(30, window=0.3)
    metadata = {"backend": "keyvault",
                **vault_metadata(fake_vault, maxRetries="0", requestTimeout="20s", bulkConcurrency="32")}
    bridge.init(metadata, instance="a")
    bridge.init(metadata, instance="b")
    results: dict[str, dict[str, dict[str, str]]] = {}

    def bulk(instance: str) -> None:
        results[instance] = bridge.bulk_get(instance=instance, timeout=100)

    threads = [threading.Thread(target=bulk, args=(i,)) for i in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(110)
    fake_vault.limit(None)
    assert set(results) == {"a", "b"}
    for got in results.values():
        assert got == {name: {name: f"value-of-{name}"} for name in names}
    # maxRetries 0: without the budget's own waiting, the first 429 would have failed the call.
    assert fake_vault.count("limited") > 0


async def test_the_rate_the_vault_allows_is_learned_from_a_throttling_episode_and_kept_to() -> None:
    vault, time = budget(initial=64)
    start = time.now
    for _ in range(40):  # forty answers over the first second ...
        await vault.acquire()
        vault.release()
        vault.succeeded()
        time.now += 0.025
    sent = await vault.acquire()
    vault.release()
    vault.throttled_by_vault(sent, retry_after=1.0)  # ... then the vault says: not for another second
    assert vault.rate == pytest.approx(40 / 2.0)  # forty answers in a cycle of two seconds
    # A request asked for now would wait out the pause: what the cache reads to answer held values at once.
    assert vault.behind() == pytest.approx(1.0)
    went = []
    for _ in range(5):
        went.append(await vault.acquire())
        vault.release()
        vault.succeeded()
    assert went[0] == pytest.approx(start + 2.0)  # not before the pause ends
    assert [round(b - a, 6) for a, b in itertools.pairwise(went)] == [0.05] * 4  # spaced to the rate
    assert vault.behind() == pytest.approx(0.05)  # the next turn at the learned rate
    time.now += 1.0
    assert vault.behind() == 0.0  # nothing queued: a request would go at once
    time.now -= 1.0
    # A read someone waits on with nothing held goes at once, ahead of the turns already given out.
    waiting = asyncio.ensure_future(vault.acquire())
    await asyncio.sleep(0)  # it has taken the next turn and sleeps until then
    slept, now = len(time.slept), time.now
    assert await vault.acquire(urgent=True) == now
    assert len(time.slept) == slept  # no turn to wait for
    vault.release()
    await waiting
    vault.release()
    # A whole cycle without a 429: the others on the vault may have gone quiet; the rate grows.
    time.now = start + 4.5
    await vault.acquire()
    vault.release()
    assert vault.rate == pytest.approx(30.0)


async def test_a_client_that_asked_little_is_not_paced_after_a_429() -> None:
    vault, _ = budget(initial=64)
    for _ in range(3):
        await vault.acquire()
        vault.release()
        vault.succeeded()
    sent = await vault.acquire()
    vault.release()
    vault.throttled_by_vault(sent, retry_after=1.0)
    assert vault.rate is None  # others spent the allowance: the pause is kept, no pace is learned


def test_a_token_endpoint_that_failed_keeps_the_identity_failing_until_it_gives_a_token() -> None:
    # A vault answer meanwhile may have used a token cached before the endpoint failed; the next
    # request that needs a new one would meet the failing endpoint.
    mark = Health("identity test")
    mark.endpoint_failed("the endpoint answered 500")
    mark.answered()
    assert mark.failing == "the endpoint answered 500"
    mark.endpoint_answered()
    assert mark.failing is None
    # A failure seen by the vault's pipeline only (e.g. a token refused by the vault) goes with its answer.
    mark.failed("the vault refused the token (401)")
    mark.answered()
    assert mark.failing is None
