"""The one asyncio loop that runs all backend I/O, on a thread of its own.

The gRPC server is the threaded `grpc.server` (faster than grpc.aio here, see
bench/): its handlers answer cache hits themselves and hand everything else to
this loop, where the Azure `aio` clients live.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from secretbridge.azure.redaction import redact
from secretbridge.core.logs import safe_traceback

log = logging.getLogger(__name__)

T = TypeVar("T")


class LoopThread:
    """An event loop running forever on a daemon thread until `stop()`."""

    def __init__(self, name: str = "secretbridge-io") -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_log_unhandled)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> LoopThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule a coroutine on the loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop and wait for its result from another thread.

        On timeout the coroutine is cancelled and `TimeoutError` raised.
        """
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what is still running, stop the loop and join its thread."""
        if not self._thread.is_alive():
            return

        async def _drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.submit(_drain()).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


def _log_unhandled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What asyncio would print for a failed background task, as one redacted error record."""
    error = context.get("exception")
    trace = safe_traceback(error) if isinstance(error, BaseException) else ""
    log.error(
        "unexpected error on the I/O loop (a bug in secretbridge)",
        extra={"cause": redact(str(context.get("message", ""))), "traceback": redact(trace),
               "error_type": type(error).__name__ if error is not None else None},
    )
