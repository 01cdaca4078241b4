"""How often a local store looks at its source again: at most once per `recheckInterval`, one thread at a time.

`file` and `containerapps` answer Gets from what they last read, on the gRPC workers. Asking
the filesystem on every Get (a stat, a readlink) costs two GIL hand-offs per call, which is
what a busy server pays most for; so a read looks again only once the interval has passed,
and while one thread looks, the others keep serving what was last seen (a stuck mount then
holds one worker, not all of them).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from secretbridge.core.metadata import Kind, Property

#: The one declaration both local stores use: the same name, default and meaning.
RECHECK_INTERVAL = Property(
    "recheckInterval",
    "How often a read checks whether the source changed (one stat, or one readlink of the volume's "
    "`..data`); a change is served within this long. 0 checks on every read.",
    Kind.DURATION,
    default=1.0,
    minimum=0.0,
)


class Recheck:
    """Decides when the source is looked at again. Any thread but the event loop may ask."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        #: Injectable so tests move time instead of sleeping through the interval.
        self.clock = clock
        self._checked_at = -math.inf
        self._checking = threading.Lock()

    def recent(self, checked_at: float) -> bool:
        """Whether a look taken at `checked_at` (on `clock`) is still within the interval."""
        return self.clock() - checked_at < self.interval

    def fresh(self) -> bool:
        """Whether what was last seen is recent enough to be trusted without looking."""
        return self.recent(self._checked_at)

    def claim(self) -> bool:
        """True when a look is due and the caller is the one to take it (it then calls `done()`)."""
        now = self.clock()
        if now - self._checked_at < self.interval or not self._checking.acquire(blocking=False):
            return False
        self._checked_at = now
        return True

    def done(self) -> None:
        """The look `claim()` granted is over."""
        self._checking.release()

    def seen(self) -> None:
        """The source was just read in full (open, a reload): no look is due for an interval."""
        self._checked_at = self.clock()
