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

#: Requests in flight to one vault at first, and the bounds AIMD keeps the limit in.
INITIAL_LIMIT = 64
MIN_LIMIT = 1
MAX_LIMIT = 256
#: The pause after a 429 that names no Retry-After (seconds), doubled per consecutive episode.
DEFAULT_BACKOFF = 1.0
MAX_BACKOFF = 30.0
#: How often one request is sent again after a 429 before the 429 is handed to the SDK.
MAX_THROTTLED_RESENDS = 8


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

    # -- admission ------------------------------------------------------------------------------
    async def acquire(self) -> float:
        """Wait for the pause to pass and a slot under the limit; returns when the request may go."""
        while True:
            now = self.clock()
            if now < self.paused_until:
                await self.sleep(self.paused_until - now)
                continue
            if self.in_flight < max(int(self.limit), self.minimum):
                self.in_flight += 1
                self.sent += 1
                return now
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # it was our turn: pass it on
                raise

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
        while True:
            sent_at = await budget.acquire()
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
