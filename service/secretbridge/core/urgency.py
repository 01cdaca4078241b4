"""Which backend requests a caller is waiting on with nothing to answer it meanwhile.

A read of a secret nothing is held for waits for the backend; a refresh of a held value does not
(its readers are answered from the value held). When a backend's requests must queue (a vault's
learned rate, its concurrency limit), the first kind goes first. The cache marks the work it starts
for such a read; the vault's request budget reads the mark. A context variable, so that the mark
follows the read into the tasks it starts and nowhere else.
"""

from __future__ import annotations

from contextvars import ContextVar

#: True while doing backend work a caller waits on with nothing held (set by the cache around the task it starts).
WAITED_ON: ContextVar[bool] = ContextVar("secretbridge_waited_on", default=False)
