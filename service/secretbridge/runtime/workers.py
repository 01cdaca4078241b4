"""The gRPC server's worker threads: many may wait on a backend, few run at once.

A call that waits on the I/O loop (a miss, a bulk read, Init) holds its worker until the
backend answers, so the server needs many workers (`--workers`, 64 by default) or one slow
vault would stall everyone's cache hits. But a cache hit is a few microseconds of Python
between two waits on gRPC's own polling thread, and on a thread pool that wakes a fresh
thread per call, 16 or 64 runnable threads take turns at the GIL: measured in bench/ (a),
a threaded server with 16 workers answered 0.65 of the calls per second that the same
server with 4 answered at 16 in flight. `WorkerPool` keeps both: it starts a call only
while fewer than `running` workers are busy outside `waiting()`, and a worker that waits
on a backend steps out of that count, so the next call starts at once on another thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

#: Workers busy at once outside `waiting()`: enough to keep gRPC's receive and send waits
#: overlapped, few enough that the GIL is not passed around (bench/ (a): 4 was the best of 4 and 16).
RUNNING_WORKERS = 4
#: Threads beyond `max_workers` that shared waits may lend the pool, as a multiple of `max_workers`.
SHARED_OVERFLOW = 4

_Work = tuple[futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]

_current = threading.local()


class WorkerPool(futures.Executor):
    """An executor of at most `max_workers` threads, at most `running` of them busy outside `waiting()`.

    Threads are started as calls need them and kept; calls start in the order they were
    submitted.
    """

    def __init__(self, max_workers: int, running: int = RUNNING_WORKERS, thread_name_prefix: str = "worker") -> None:
        if max_workers < 1 or running < 1:
            raise ValueError(f"max_workers {max_workers} and running {running} must be at least 1")
        self.max_workers = max_workers
        self.running = min(running, max_workers)
        self._prefix = thread_name_prefix
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._work: deque[_Work] = deque()
        self._threads: list[threading.Thread] = []
        self._busy = 0  # running a call, not inside waiting()
        self._idle = 0  # waiting for a call
        self._woken = 0  # idle workers notified but not yet back on the lock
        self._shared = 0  # workers inside waiting(shared=True): each lends the pool one thread
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._work.append((future, fn, args, kwargs))
            self._start_more()
        return future

    def _start_more(self) -> None:
        # Under the lock: wake (or start) one worker per call that may start now.
        startable = min(len(self._work), self.running - self._busy) - self._woken
        for _ in range(max(0, startable)):
            if self._idle > self._woken:
                self._woken += 1
                self._ready.notify()
            elif len(self._threads) < self.max_workers + min(self._shared, self.max_workers * SHARED_OVERFLOW):
                self._woken += 1  # counted as woken until it first takes the lock
                thread = threading.Thread(
                    target=self._worker, name=f"{self._prefix}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                break

    def _worker(self) -> None:
        _current.pool = self
        with self._lock:
            self._woken -= 1
            while True:
                if self._work and self._busy < self.running:
                    future, fn, args, kwargs = self._work.popleft()
                    self._busy += 1
                    self._lock.release()
                    try:
                        if future.set_running_or_notify_cancel():
                            try:
                                result = fn(*args, **kwargs)
                            except BaseException as err:  # handed to whoever holds the future
                                future.set_exception(err)
                            else:
                                future.set_result(result)
                    finally:
                        del future, fn, args, kwargs
                        self._lock.acquire()
                        self._busy -= 1
                    continue
                if self._closed and not self._work:
                    return
                self._idle += 1
                self._ready.wait()
                self._idle -= 1
                self._woken = max(0, self._woken - 1)

    @contextlib.contextmanager
    def _stepped_out(self, shared: bool) -> Iterator[None]:
        with self._lock:
            self._busy -= 1
            self._shared += shared
            self._start_more()
        try:
            yield
        finally:
            with self._lock:
                # Back at once, even past `running`: its answer is in and should go out now.
                self._busy += 1
                self._shared -= shared

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                while self._work:
                    self._work.popleft()[0].cancel()
            self._ready.notify_all()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()


def waiting(shared: bool = False) -> contextlib.AbstractContextManager[None]:
    """Mark the calling worker as waiting (on the I/O loop), so that another may start a call meanwhile.

    `shared`: the wait is bounded by someone else's count of backend work (a cache's single-flight
    reads, a held value's staleWait), not by the pool's: while it lasts the pool may run one thread
    more than `max_workers` (up to SHARED_OVERFLOW times as many), so many callers waiting on one
    piece of work never leave other calls without a thread. A no-op on any thread that is not a
    `WorkerPool`'s.
    """
    pool: WorkerPool | None = getattr(_current, "pool", None)
    if pool is None:
        return contextlib.nullcontext()
    return pool._stepped_out(shared)
