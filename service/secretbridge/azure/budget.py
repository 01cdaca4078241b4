"""One request budget per vault host, shared by every instance in the process.

Key Vault throttles per vault (about 4,000 GETs per 10 s, research/keyvault-and-managed-identity.md),
whoever asks: two Components on one vault, a BulkGet beside hot Gets, and the reference resolver
all spend the same allowance. So every request to a vault host passes one `VaultBudget`:

- **Concurrency that adapts (AIMD).** At most `limit` requests are in flight to the vault; each
  answer that is not a 429 adds `1/limit` (about one more per round of answers), a 429 halves it,
  once per throttling episode (the 429s of requests already in flight when the first one came
  back are the same episode, not new evidence).
- **Retry-After is honoured by everyone.** A 429 pauses every request to that vault until its
  `Retry-After` (or a short back-off when it names none) has passed, so the process stops spending
  the vault's allowance at once instead of each reader retrying blindly.
- **A throttled request is sent again** after the pause, up to `MAX_THROTTLED_RESENDS` times,
  without spending the SDK's `maxRetries` (those stay for failures); the caller's own timeout
  (requestTimeout, or BulkGet's) still bounds it.
- **The vault's rate is learned and kept to.** A throttling episode ends a cycle: the requests
  the vault answered since the previous cycle ended, over the cycle's length up to the end of
  this pause (the vault's window, as Retry-After tells it), are what the vault gives this process
  (its share when other clients spend the same allowance). From then on requests are spaced to
  that rate instead of running into the limit again and again, which would meet every other app
  on the vault with 429s too. The rate grows by half each whole cycle (a second at most) without a
  429 (the others may have gone quiet, or finished), and pacing stops once it is far above anything a vault allows.

Cold BulkGets of several instances therefore share one queue in front of the vault rather than
stampeding it: the fastest any of them can go is what the vault allows.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy

from secretbridge.core.urgency import WAITED_ON

#: Requests in flight to one vault at first, and the bounds AIMD keeps the limit in.
INITIAL_LIMIT = 64
MIN_LIMIT = 1
MAX_LIMIT = 256
#: The pause after a 429 that names no Retry-After (seconds), doubled per consecutive episode.
DEFAULT_BACKOFF = 1.0
MAX_BACKOFF = 30.0
#: How often one request is sent again after a 429 before the 429 is handed to the SDK.
MAX_THROTTLED_RESENDS = 8
#: A learned rate grows by this factor per whole cycle (at most GROW_EVERY seconds) without a 429 ...
RATE_GROWTH = 1.5
GROW_EVERY = 1.0
#: ... and above this (requests per second: Key Vault's limit is 400/s per vault) pacing stops.
UNPACED_ABOVE = 4_000.0
#: Requests that may go at once after an idle spell, as seconds of the learned rate.
RATE_BURST = 0.05
#: A spell without answers this long (seconds) ends a busy spell: only the latest one is counted.
IDLE_GAP = 0.5
#: Fewer answers than this in a cycle teach nothing: a client that asks little is not the one
#: spending the vault's allowance, and pacing it to its own small demand would only slow it later.
LEARN_MIN_ANSWERS = 32
#: A cycle is counted over this much at most (seconds): Key Vault's limits are per 10 s, and a
#: quiet hour before the first 429 says nothing of the rate the vault allows.
LEARN_WINDOW = 10.0


class VaultBudget:
    """The shared allowance for one vault host. Runs on one event loop; not thread-safe.

    `clock` and `sleep` are injectable so tests move time instead of waiting.
    """

    def __init__(
        self,
        host: str,
        *,
        initial: int = INITIAL_LIMIT,
        minimum: int = MIN_LIMIT,
        maximum: int = MAX_LIMIT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.host = host
        self.limit = float(initial)
        self.minimum = minimum
        self.maximum = maximum
        self.clock = clock
        self.sleep = sleep
        self.in_flight = 0
        self.paused_until = -math.inf
        #: Counters for metrics and the bench: requests sent, 429s received, limit cuts.
        self.sent = 0
        self.throttled = 0
        self.cuts = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # A 429 from a request sent before this moment belongs to the episode already answered.
        self._episode_started = -math.inf
        self._backoff = DEFAULT_BACKOFF
        #: The learned rate (requests per second), None while unpaced.
        self.rate: float | None = None
        self._next_at = -math.inf  # when the next paced request may go
        self._cycle_start = clock()  # the end of the latest pause (or the start)
        self._answered: deque[float] = deque()  # when each answer (not a 429) came, within LEARN_WINDOW
        self._cycle = 0.0  # the latest cycle's length
        self._grow_at = math.inf  # when a clean cycle has passed and the rate grows
        self._pace = 0  # bumped whenever the rate changes: turns given under an older one are taken again

    def behind(self) -> float:
        """How long (seconds) a request asked for now would wait for its turn before it is sent:
        a Retry-After pause, the learned rate's queue, or requests queued for a slot under the limit
        (counted as one turn each at the learned rate, or as a turn of unknown length: 0 < x)."""
        now = self.clock()
        wait = max(self.paused_until - now, 0.0)
        if self.rate is not None:
            wait = max(wait, self._next_at - now)
        if self._waiters:
            wait = max(wait, len(self._waiters) / self.rate if self.rate else 1e-3)
        return wait

    # -- admission ------------------------------------------------------------------------------
    async def acquire(self, urgent: bool = False) -> float:
        """Wait for the pause to pass, the request's turn at the learned rate, and a slot under the
        limit; returns when the request may go.

        Turns are handed out in arrival order when a request arrives. An `urgent` request (a page
        of a listing: every read of a BulkGet waits for the pages; a read a caller waits on with
        nothing held) goes first, pushing the others back by one turn, so the rate is kept all the
        same, and is first in line for a slot under the limit.
        """
        turn: tuple[int, float] | None = None  # (the pace it was given under, when)
        while True:
            now = self.clock()
            if now < self.paused_until:
                await self.sleep(self.paused_until - now)
                continue
            if self.rate is not None and (turn is None or turn[0] != self._pace):
                turn = (self._pace, self._take_turn(now, urgent))
            if turn is not None and turn[0] == self._pace and turn[1] > now:
                await self.sleep(turn[1] - now)
                continue
            if self.in_flight < max(int(self.limit), self.minimum):
                self.in_flight += 1
                self.sent += 1
                return now
            waiter = asyncio.get_running_loop().create_future()
            if urgent:
                self._waiters.appendleft(waiter)
            else:
                self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # it was our turn: pass it on
                raise

    def _take_turn(self, now: float, urgent: bool) -> float:
        """The next turn at the learned rate (grown after a clean cycle); `now` once unpaced."""
        assert self.rate is not None
        if now >= self._grow_at:
            self.rate *= RATE_GROWTH
            self._grow_at = now + min(self._cycle, GROW_EVERY)
            self._pace += 1
            self._next_at = now  # turns given under the old rate are void: they are all taken again
            if self.rate > UNPACED_ABOVE:
                self.rate = None
                return now
        gap = 1.0 / self.rate
        if urgent:
            self._next_at = max(self._next_at, now - RATE_BURST) + gap
            return now
        at = max(self._next_at, now - RATE_BURST)
        self._next_at = at + gap
        return at

    def release(self) -> None:
        """A request finished (whatever its answer)."""
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        free = max(int(self.limit), self.minimum) - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    # -- feedback -------------------------------------------------------------------------------
    def succeeded(self) -> None:
        """An answer that was not a 429: grow by about one per round of answers."""
        now = self.clock()
        self._answered.append(now)
        while self._answered and self._answered[0] < now - LEARN_WINDOW:
            self._answered.popleft()
        self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
        self._backoff = DEFAULT_BACKOFF
        self._wake()

    def throttled_by_vault(self, sent_at: float, retry_after: float | None) -> None:
        """A 429 for a request sent at `sent_at`: pause everyone, halve the limit once per episode."""
        self.throttled += 1
        now = self.clock()
        if retry_after is None or retry_after < 0:
            wait = self._backoff
            if sent_at > self._episode_started:
                self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        else:
            wait = retry_after
        self.paused_until = max(self.paused_until, now + wait)
        if sent_at > self._episode_started:
            self._episode_started = now
            self.limit = max(float(self.minimum), self.limit / 2)
            self.cuts += 1
            self._learn(self.paused_until)
        self._grow_at = self.paused_until + min(self._cycle, GROW_EVERY)

    def _learn(self, cycle_end: float) -> None:
        """A new throttling episode: what the vault answered over the cycle ending with this pause is its rate."""
        start = max(self._cycle_start, self.clock() - LEARN_WINDOW)
        counted = [at for at in self._answered if at >= start]
        # From the first answer of the latest busy spell: an idle one before it says nothing of the rate.
        first = len(counted)
        while first > 0 and (first == len(counted) or counted[first] - counted[first - 1] < IDLE_GAP):
            first -= 1
        counted = counted[first:]
        answered = len(counted)
        cycle = cycle_end - (counted[0] if counted else start)
        if answered >= LEARN_MIN_ANSWERS and cycle > 0:
            self._cycle = cycle
            self.rate = answered / cycle
            self._next_at = cycle_end
            self._pace += 1
        self._cycle_start = cycle_end
        self._answered.clear()


def retry_after_seconds(headers: Any, now: Callable[[], float] = time.time) -> float | None:
    """The wait a 429 asks for: `retry-after-ms`/`x-ms-retry-after-ms`, else `Retry-After` (seconds or a date)."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value:
            try:
                return max(float(value) / 1000.0, 0.0)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now(), 0.0)


class BudgetPolicy(AsyncHTTPPolicy):
    """The azure-core pipeline step that sends every request of a vault client through its budget.

    It sits after the SDK's retry policy, so each attempt is admitted on its own, and a 429 is
    waited out here (everyone pauses) before the SDK's retries would count it.
    """

    def __init__(self, budget: VaultBudget) -> None:
        super().__init__()
        self.budget = budget

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        budget = self.budget
        resends = 0
        # A page of a listing (`GET /secrets?...`): BulkGet's reads all wait behind the pages. A read a
        # caller waits on with nothing held (core/urgency.py) goes before refreshes of held values.
        urgent = WAITED_ON.get() or request.http_request.url.split("?", 1)[0].rstrip("/").endswith("/secrets")
        while True:
            sent_at = await budget.acquire(urgent)
            try:
                response = await self.next.send(request)
            finally:
                budget.release()
            if response.http_response.status_code != 429:
                budget.succeeded()
                return response
            budget.throttled_by_vault(sent_at, retry_after_seconds(response.http_response.headers))
            if resends >= MAX_THROTTLED_RESENDS:
                return response  # the SDK's retry policy (maxRetries) decides now
            resends += 1


# One budget per (event loop, vault host): asyncio objects belong to one loop, and tests run many.
_BUDGETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, VaultBudget]] = (
    weakref.WeakKeyDictionary()
)


def budget_for(host: str) -> VaultBudget:
    """The budget every client of `host` (lower-cased `host[:port]`) on this loop shares."""
    loop = asyncio.get_running_loop()
    by_host = _BUDGETS.setdefault(loop, {})
    key = host.lower()
    budget = by_host.get(key)
    if budget is None:
        budget = by_host[key] = VaultBudget(key)
    return budget
