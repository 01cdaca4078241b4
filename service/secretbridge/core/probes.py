"""One probe at a time of a backend known to be failing.

While a backend fails, every read past its TTL is answered from the value held (runtime/cache.py).
Something must still find out when the backend is back. One refresh per expired key did that, and
during an outage that is a storm: the soak's 101 keys with a 5 s TTL sent about 25 requests a
second into a vault answering 503, each one TLS, a retry policy and a failure on the serving
process's loop, slowing every read in the process (its cache hits too), and adding load to a vault
that is already in trouble. One probe (a real refresh of one due key) at a time, the next no
sooner than `PROBE_EVERY` after the previous one ended, says the same: its success clears the
failing mark, and the held keys are then refreshed as usual.

A gate belongs to what fails: one vault host (shared by every instance reading it), or one cache
when its source has no such notion.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: Seconds between the end of one probe of a failing backend and the start of the next. A rotation
#: made during an outage is served at most about this long (plus the probe's own retries) after the
#: backend is back: well within cacheTTL + 2 s for any TTL.
PROBE_EVERY = 1.0


class ProbeGate:
    """Lets one probe through at a time, then none for `every` seconds after it ended (any thread)."""

    def __init__(self, every: float = PROBE_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._out = False
        self._next = -float("inf")
        #: Probes let through, for tests and the bench.
        self.probes = 0

    def claim(self) -> bool:
        """True for the one caller that should probe now; it must call `done` when the probe ends."""
        with self._lock:
            if self._out or self.clock() < self._next:
                return False
            self._out = True
            self.probes += 1
            return True

    def done(self) -> None:
        """The probe ended (answered, failed or cancelled): the next may start `every` seconds from now."""
        with self._lock:
            self._out = False
            self._next = self.clock() + self.every
