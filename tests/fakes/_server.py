"""An aiohttp application served from its own event loop on a background thread.

The fakes answer many concurrent requests (bulk reads, 200 parallel Gets), so
they run on aiohttp rather than `http.server`. Control methods are called from
the test's thread; they touch shared state under a lock, or hop onto the
server's loop when they must change the listening socket.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

T = TypeVar("T")

_START_TIMEOUT = 10.0


class BackgroundServer:
    """Base class: subclasses build their routes in `make_app`."""

    scheme = "http"

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._ssl_context = ssl_context
        # host/port: a loopback address of the test's choosing (a fixed port such as 443 for a client that
        # insists on it); by default 127.0.0.1 and an ephemeral port.
        self._host = host
        self._fixed_port = port
        if ssl_context is not None:
            self.scheme = "https"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port: int | None = None
        self._up = False
        self.lock = threading.Lock()
        # hold(): requests arriving wait on this gate (made on the server's loop) until release().
        self._gate: asyncio.Event | None = None
        self._skip = 0
        self._held = 0

    # -- to override ------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        raise NotImplementedError

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The ephemeral port the server was given (kept across go_down/come_up)."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def url(self) -> str:
        """The base URL, e.g. `https://127.0.0.1:41234`."""
        return f"{self.scheme}://{self._host}:{self.port}"

    def start(self) -> Self:
        """Start the loop thread and listen on 127.0.0.1 (an ephemeral port)."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        """Close every connection and the loop; the port is released."""
        if self._thread is None or self._loop is None:
            return
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=_START_TIMEOUT)
            self._loop.close()
            self._thread = None
            self._loop = None

    def go_down(self) -> None:
        """Stop listening and drop open connections: clients see connection refused/reset.

        The port stays reserved for this server in the sense that `come_up`
        listens on the same one again (SO_REUSEADDR), so URLs held by clients
        stay valid.
        """
        self._call(self._go_down())

    def come_up(self) -> None:
        """Listen again on the same port after `go_down`."""
        self._call(self._listen(self.port))

    @property
    def is_up(self) -> bool:
        return self._up

    def hold(self, skip: int = 0) -> None:
        """Hold every request that arrives from now on open, unanswered, until `release()`;
        `skip`: let that many pass first (answered as usual: a 503 a test set up, say).

        The connection is accepted and the request read, but no answer comes: a hung service.
        Tests use it to show that a caller did not wait on the backend (its answer came while
        the backend's request was still held), without measuring time. `held` says how many
        requests are waiting.
        """
        self._call(self._set_gate(hold=True, skip=skip))

    def hang(self) -> None:
        """The service hangs: as `hold()` (accepts, never answers) until `release()`."""
        self.hold()

    def release(self) -> None:
        """Answer the held requests (and every later one) as usual again."""
        self._call(self._set_gate(hold=False))

    @property
    def held(self) -> int:
        """Requests being held open by `hold()` now."""
        with self.lock:
            return self._held

    async def _set_gate(self, *, hold: bool, skip: int = 0) -> None:
        if hold:
            self._skip = skip
            if self._gate is None:
                self._gate = asyncio.Event()
        elif self._gate is not None:
            self._gate.set()
            self._gate = None

    async def _hold_point(self) -> None:
        """Wait here while the test holds requests (see `hold`)."""
        gate = self._gate
        if gate is None:
            return
        if self._skip > 0:
            self._skip -= 1
            return
        with self.lock:
            self._held += 1
        try:
            await gate.wait()
        finally:
            with self.lock:
                self._held -= 1

    def raise_priority(self, niceness: int = -10) -> bool:
        """Run the server's thread at `niceness` (Linux, with CAP_SYS_NICE); False when not allowed.

        For benchmarks: the double stands in for a remote service, so a busy machine should slow
        the code under test, not the stand-in's answers.
        """

        async def renice() -> bool:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
            except (OSError, AttributeError):
                return False
            return True

        return self._call(renice())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- on the server's loop ---------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError(f"{type(self).__name__} is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_START_TIMEOUT)

    async def _start(self) -> None:
        # handler_cancellation: a client that gives up (timeouts in tests) must not leave
        # a handler sleeping in the fake's latency.
        app = self.make_app()
        app.middlewares.insert(0, self._refuse_when_down)
        self._runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True)
        await self._runner.setup()
        await self._listen(self._fixed_port)

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        if self._up:
            return
        site = web.TCPSite(
            self._runner, self._host, port, ssl_context=self._ssl_context, reuse_address=True
        )
        await site.start()
        self._site = site
        if self._port is None:
            self._port = site.port if port == 0 else port
        self._up = True

    @web.middleware
    async def _refuse_when_down(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # A connection still in its TLS handshake when the server went down is not yet among
        # server.connections, so force_close misses it; it must not serve a request afterwards.
        if not self._up:
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPServiceUnavailable()  # never reaches the client: its connection is gone
        await self._hold_point()
        response: web.StreamResponse = await handler(request)
        return response

    async def _go_down(self) -> None:
        if not self._up or self._site is None or self._runner is None:
            return
        self._up = False  # first: requests arriving from here on are refused
        await self._site.stop()
        self._site = None
        server = self._runner.server
        if server is not None:
            for connection in server.connections:
                connection.force_close()

    async def _stop(self) -> None:
        await self._set_gate(hold=False)
        if self._runner is not None:
            await self._go_down()
            await self._runner.cleanup()
            self._runner = None
