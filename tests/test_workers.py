"""The server's worker pool: few calls run at once, and a call waiting on a backend lets another start."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures

import pytest
from secretbridge.runtime.workers import WorkerPool, waiting

SETTLE = 0.2  # long enough for a wrongly started call to have started; no assertion depends on speed


def _until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, "the pool never got there"
        time.sleep(0.01)


def _waits_on(backend: threading.Event, answer: str | None = None) -> Callable[[], str | None]:
    """A call that waits on `backend` as a miss waits on the I/O loop (inside `waiting()`)."""

    def call() -> str | None:
        with waiting():
            backend.wait(10)
        return answer

    return call


def test_at_most_running_calls_run_at_once_and_all_finish() -> None:
    pool = WorkerPool(16, running=3)
    release = threading.Event()
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    def call(i: int) -> int:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        release.wait(10)
        with lock:
            state["now"] -= 1
        return i

    submitted = [pool.submit(call, i) for i in range(12)]
    _until(lambda: state["now"] >= 3)
    time.sleep(SETTLE)
    assert state["now"] == 3  # three started, nine queued
    release.set()
    assert [f.result(10) for f in submitted] == list(range(12))
    assert state["most"] == 3
    pool.shutdown()


def test_a_call_waiting_on_a_backend_lets_the_next_one_start() -> None:
    pool = WorkerPool(8, running=1)
    backend = threading.Event()
    first = pool.submit(_waits_on(backend, "slow"))
    second = pool.submit(lambda: "fast")
    # With one running slot and no step-out, "fast" would wait behind "slow".
    assert second.result(10) == "fast"
    assert not first.done()
    backend.set()
    assert first.result(10) == "slow"
    pool.shutdown()


def test_the_limit_still_holds_after_calls_have_waited() -> None:
    pool = WorkerPool(8, running=1)
    backend = threading.Event()

    def holds(i: int) -> int:
        backend.wait(10)
        return i

    first = pool.submit(_waits_on(backend))
    second = pool.submit(holds, 2)
    third = pool.submit(holds, 3)
    # The first stepped out, so "holds 2" runs; "holds 3" must wait its turn, before and after "waits" is back.
    time.sleep(SETTLE)
    assert not third.running()
    backend.set()
    first.result(10)
    assert (second.result(10), third.result(10)) == (2, 3)
    time.sleep(SETTLE)  # the workers are back waiting for calls
    backend.clear()
    later = [pool.submit(holds, i) for i in range(3)]
    _until(lambda: any(f.running() for f in later))
    time.sleep(SETTLE)
    assert sum(f.running() for f in later) == 1
    backend.set()
    assert [f.result(10) for f in later] == [0, 1, 2]
    pool.shutdown()


def test_max_workers_bounds_the_threads_even_when_all_wait() -> None:
    pool = WorkerPool(2, running=2)
    backend = threading.Event()
    held = [pool.submit(_waits_on(backend)) for _ in range(2)]
    third = pool.submit(lambda: "third")
    with pytest.raises(futures.TimeoutError):
        third.result(SETTLE)  # both threads are taken
    backend.set()
    assert third.result(10) == "third"
    for f in held:
        f.result(10)
    pool.shutdown()


def test_errors_reach_the_caller_and_shutdown_ends_the_threads() -> None:
    pool = WorkerPool(4, thread_name_prefix="shutdown-test")

    def broken() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        pool.submit(broken).result(10)
    assert pool.submit(lambda: 1).result(10) == 1  # the worker survived
    pool.shutdown()
    assert not [t for t in threading.enumerate() if t.name.startswith("shutdown-test")]
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(lambda: 2)


def test_waiting_is_harmless_off_the_pool() -> None:
    with waiting():
        pass


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="max_workers 0"):
        WorkerPool(0)


def test_shared_waits_lend_the_pool_a_thread_each() -> None:
    pool = WorkerPool(2, running=2)
    backend = threading.Event()

    def shared_wait() -> None:
        with waiting(shared=True):
            backend.wait(30)

    held = [pool.submit(shared_wait) for _ in range(6)]  # three times the pool, all waiting on one thing
    assert pool.submit(lambda: "another call").result(10) == "another call"
    backend.set()
    for f in held:
        f.result(10)
    pool.shutdown()
