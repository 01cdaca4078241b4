"""Whether a vault host, or an identity's token endpoint, is failing now: known from the first
failed attempt, shared by every instance in the process that uses it, forgotten at the first success.

The cache answers a read past its TTL from the value it holds, without waiting, while the backend
behind it is failing (DESIGN.md, "Cache and resilience"). Learning that only when a whole call has
given up (retries within requestTimeout, about 5 s) is too late: every read that comes due at the
start of an outage would wait for it. So each attempt reports here as it ends, or as soon as it
has outlived its share of requestTimeout:

- a vault attempt (`HealthPolicy`, in every vault pipeline): a 5xx or 429 answer, a connection
  refused or reset, a DNS or TLS failure, an attempt still unanswered after its share, or a
  token request that failed marks the vault host failing; any other answer (200, 404, 403 ...)
  says the vault answers and clears it, and clears the identity's mark too (a token was had);
- a token request (`CauseAwareRetryPolicy`'s `on_failure`, in the credential's pipelines): a
  5xx, 429 or transport failure marks the identity failing.

A mark is only a hint to serve held values at once; the reads and refreshes themselves still go
to the backend and decide.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy

from secretbridge.azure.causes import classify_cause, describe_cause, failing_status
from secretbridge.core.probes import ProbeGate


class Health:
    """One vault host's (or identity's) failing mark. Set on its loop; read from any thread."""

    def __init__(self, key: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.key = key
        self.clock = clock
        #: Why it is failing (no value, token or header in it), or None while it answers.
        self.failing: str | None = None
        self.since: float | None = None
        #: Attempts that failed, for the bench and tests.
        self.failures = 0
        # Set by the token endpoint itself: only its own answer clears it (`endpoint_answered`).
        self._endpoint_failing = False
        self._watchers: set[asyncio.Future[str]] = set()
        #: While it fails, the one refresh at a time that asks it, whichever instance starts it.
        self.probes = ProbeGate()

    def failed(self, cause: str) -> None:
        """An attempt failed (or outlived its share of requestTimeout): watchers hear of it now."""
        self._fail(cause)

    def endpoint_failed(self, cause: str) -> None:
        """A token request failed at the endpoint: failing until the endpoint answers again. A vault
        answer meanwhile does not clear it: that request may have carried a token cached before the
        endpoint failed, and the next one that needs a new token would meet the failing endpoint."""
        self._endpoint_failing = True
        self._fail(cause)

    def _fail(self, cause: str) -> None:
        self.failures += 1
        if self.failing is None:
            self.since = self.clock()
        self.failing = cause
        for watcher in list(self._watchers):
            if not watcher.done():
                watcher.set_result(cause)

    def watch(self, future: asyncio.Future[str]) -> None:
        """Resolve `future` with the cause at the next failed attempt (a reader waiting for a
        refresh stops waiting then). On this mark's loop; a done future is forgotten."""
        if future.done():
            return
        self._watchers.add(future)
        future.add_done_callback(self._watchers.discard)

    def answered(self) -> None:
        """An attempt was answered: the mark goes at once (but see `endpoint_failed`)."""
        if not self._endpoint_failing:
            self.failing = None
            self.since = None

    def endpoint_answered(self) -> None:
        """The token endpoint gave a token: the mark goes at once, whoever set it."""
        self._endpoint_failing = False
        self.failing = None
        self.since = None


# One per (event loop, key): the marks belong to the clients of one server; tests run many.
_HEALTH: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Health]] = weakref.WeakKeyDictionary()


def health_for(key: str) -> Health:
    """The mark every client of `key` ("vault <host:port>", "identity <words>") on this loop shares."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # built off any loop (a check, a test): nobody to share with
        return Health(key)
    by_key = _HEALTH.setdefault(loop, {})
    found = by_key.get(key)
    if found is None:
        found = by_key[key] = Health(key)
    return found


def vault_health(netloc: str) -> Health:
    """The mark of one vault host (`host[:port]`, lower-cased)."""
    return health_for("vault " + netloc.lower())


def identity_health(identity: str) -> Health:
    """The mark of one identity (as `describe_identity` words it): its token endpoint's health."""
    return health_for("identity " + identity)


class HealthPolicy(AsyncHTTPPolicy):
    """The pipeline step that reports each attempt to a vault host's `Health` (after the retry policy,
    so every attempt is seen, the first one included)."""

    def __init__(self, vault: Health, identity: Health | None, attempt_share: float | None) -> None:
        super().__init__()
        self.vault = vault
        self.identity = identity
        #: An attempt unanswered this long (seconds) marks the vault failing; None: never.
        self.attempt_share = attempt_share

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        timer = None
        if self.attempt_share is not None:
            share = self.attempt_share
            timer = asyncio.get_running_loop().call_later(
                share, self.vault.failed, f"a request was not answered within {share:g}s"
            )
        try:
            response = await self.next.send(request)
        except ClientAuthenticationError as exc:
            # The token request failed (the challenge policy asks for it inside this attempt). A
            # refusal (4xx) marks the identity failing too: it is no decision about any secret, so
            # held values are answered through it (`core.errors.decides_about_secret`).
            status = getattr(exc, "status_code", None)
            failure = "the token request failed" if status is None else f"the token endpoint answered {status}"
            (self.identity or self.vault).failed(failure)
            raise
        except Exception as exc:
            self.vault.failed(describe_cause(exc) or f"the request failed ({classify_cause(exc).value})")
            raise
        finally:
            if timer is not None:
                timer.cancel()
        status = response.http_response.status_code
        if failing_status(status):
            self.vault.failed(f"the vault answered {status}")
        elif status == 401 and "Authorization" in request.http_request.headers:
            # Not the first challenge: the vault refused a token it was sent (another tenant, a revoked
            # identity). The challenge policy asks once more; until something is answered, it fails.
            (self.identity or self.vault).failed("the vault refused the token (401)")
        elif status != 401:  # 401 is the challenge every client meets first: it says nothing either way
            self.vault.answered()
            if self.identity is not None:
                self.identity.answered()
        return response
