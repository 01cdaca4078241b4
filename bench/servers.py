"""The servers the benchmarks compare secretbridge with, each run as its own process.

- `echo-aio`: a bare `grpc.aio.server` whose `SecretStore/Get` returns a prebuilt
  `GetSecretResponse` the size of a real one.
- `echo-threaded`: the same on the threaded `grpc.server` (`--workers`).
- `echo-pool`: the same on secretbridge's own `WorkerPool` (`--workers`, at most 4 running), which
  isolates what the pool costs from what secretbridge's handler costs.
- `bridge-aio`: secretbridge's instances and cache behind an async servicer on
  `grpc.aio.server`; the production server (`python -m secretbridge serve`) is the
  threaded alternative. DESIGN.md asks for both to be measured and the faster kept.

The echo servers are the ceiling: no Python work but the handler call itself, so
the gap between them and secretbridge is what secretbridge's own code costs. They
are complete pluggable secret stores as daprd sees one (reflection, Init, Features),
so daprd can load them too: section (i) puts one behind daprd.

Run one with `python -m bench.servers KIND --socket PATH [--workers N]`; it serves
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc
from grpc_reflection.v1alpha import reflection
from secretbridge.core import errors
from secretbridge.core.logs import configure
from secretbridge.core.policy import OperatorPolicy
from secretbridge.proto.components.v1 import common_pb2, secretstore_pb2, secretstore_pb2_grpc
from secretbridge.runtime.instances import DEFAULT_INSTANCE, Instances, label
from secretbridge.runtime.metrics import CALLS
from secretbridge.runtime.server import INIT_TIMEOUT, MAX_MESSAGE_BYTES, SERVICE_NAME, STATUS_BY_ERROR
from secretbridge.runtime.workers import WorkerPool

from bench.workload import ECHO_KEY, INSTANCE_HEADER, secret_value

T = TypeVar("T")

KINDS = ("echo-aio", "echo-threaded", "echo-pool", "bridge-aio")
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def echo_reply() -> secretstore_pb2.GetSecretResponse:
    """What a cached single-valued Get returns, built once."""
    return secretstore_pb2.GetSecretResponse(data={ECHO_KEY: secret_value(ECHO_KEY)})


class ThreadedEcho(secretstore_pb2_grpc.SecretStoreServicer):
    """Get answers a constant; Init and Features answer empty (what daprd needs to load it); the
    rest is UNIMPLEMENTED (the base class)."""

    def __init__(self) -> None:
        self.reply = echo_reply()

    def Init(self, request: secretstore_pb2.SecretStoreInitRequest, context: grpc.ServicerContext) -> Any:
        return secretstore_pb2.SecretStoreInitResponse()

    def Features(self, request: common_pb2.FeaturesRequest, context: grpc.ServicerContext) -> Any:
        return common_pb2.FeaturesResponse()

    def Get(self, request: secretstore_pb2.GetSecretRequest, context: grpc.ServicerContext) -> Any:
        return self.reply


class AioEcho(secretstore_pb2_grpc.SecretStoreServicer):
    """The async twin of `ThreadedEcho`."""

    def __init__(self) -> None:
        self.reply = echo_reply()

    async def Init(self, request: secretstore_pb2.SecretStoreInitRequest, context: grpc.aio.ServicerContext) -> Any:
        return secretstore_pb2.SecretStoreInitResponse()

    async def Features(self, request: common_pb2.FeaturesRequest, context: grpc.aio.ServicerContext) -> Any:
        return common_pb2.FeaturesResponse()

    async def Get(self, request: secretstore_pb2.GetSecretRequest, context: grpc.aio.ServicerContext) -> Any:
        return self.reply


def _discoverable(server: grpc.Server | grpc.aio.Server) -> None:
    """gRPC reflection, which daprd's pluggable discovery asks for the services a socket serves."""
    reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME), server)


def _instance_of(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == INSTANCE_HEADER:
            return str(value)
    return DEFAULT_INSTANCE


class AioBridge(secretstore_pb2_grpc.SecretStoreServicer):
    """secretbridge's servicer rewritten for grpc.aio: same instances, same cache, one loop.

    It does the per-call work the production servicer does (header lookup, name
    and option checks, allow/deny, metrics) so that the two serving models are
    compared on equal terms; only the server and the hop to the loop differ.
    """

    def __init__(self, instances: Instances) -> None:
        self.instances = instances

    async def _serve(
        self, method: str, context: grpc.aio.ServicerContext, work: Callable[[str], Awaitable[T]]
    ) -> T:
        instance = _instance_of(context)
        started = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            return await work(instance)
        except errors.SecretStoreError as err:
            code = STATUS_BY_ERROR.get(type(err), grpc.StatusCode.INTERNAL)
            await context.abort(code, f"{method} on {label(instance)}: {err.message}")
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            await context.abort(code, f"{method} on {label(instance)}: the call took too long")
        finally:
            CALLS.record(instance, method, code.name, time.monotonic() - started)
        raise AssertionError("unreachable")  # context.abort raises

    async def Init(self, request: secretstore_pb2.SecretStoreInitRequest, context: grpc.aio.ServicerContext) -> Any:
        properties = dict(request.metadata.properties)

        async def work(name: str) -> secretstore_pb2.SecretStoreInitResponse:
            async with asyncio.timeout(INIT_TIMEOUT):
                await self.instances.init(name, properties)
            return secretstore_pb2.SecretStoreInitResponse()

        return await self._serve("Init", context, work)

    async def Features(self, request: common_pb2.FeaturesRequest, context: grpc.aio.ServicerContext) -> Any:
        async def work(name: str) -> common_pb2.FeaturesResponse:
            return common_pb2.FeaturesResponse(features=self.instances.get(name).features())

        return await self._serve("Features", context, work)

    async def Get(self, request: secretstore_pb2.GetSecretRequest, context: grpc.aio.ServicerContext) -> Any:
        async def work(name: str) -> secretstore_pb2.GetSecretResponse:
            instance = self.instances.get(name)
            key = request.key
            asked = instance.check_get(key, request.metadata)
            data = instance.peek(key, asked)
            if data is None:
                async with asyncio.timeout(instance.call_timeout):
                    data = await instance.get(key, asked)
            return secretstore_pb2.GetSecretResponse(data=data)

        return await self._serve("Get", context, work)

    async def BulkGet(self, request: secretstore_pb2.BulkGetSecretRequest, context: grpc.aio.ServicerContext) -> Any:
        async def work(name: str) -> secretstore_pb2.BulkGetSecretResponse:
            instance = self.instances.get(name)
            options = instance.bulk_options(request.metadata)
            async with asyncio.timeout(instance.call_timeout):
                every = await instance.bulk_get(options.limit, options.view)
            return secretstore_pb2.BulkGetSecretResponse(
                data={key: secretstore_pb2.SecretResponse(secrets=value) for key, value in every.items()}
            )

        return await self._serve("BulkGet", context, work)

    async def Ping(self, request: common_pb2.PingRequest, context: grpc.aio.ServicerContext) -> Any:
        return common_pb2.PingResponse()


def serve_threaded(socket_path: str, workers: int, pool: bool = False) -> None:
    """The threaded echo (on secretbridge's WorkerPool when `pool`), until SIGTERM/SIGINT."""
    executor = WorkerPool(workers) if pool else futures.ThreadPoolExecutor(max_workers=workers)
    server = grpc.server(executor, options=_OPTIONS)
    secretstore_pb2_grpc.add_SecretStoreServicer_to_server(ThreadedEcho(), server)
    _discoverable(server)
    if server.add_insecure_port(f"unix:{socket_path}") == 0:
        raise SystemExit(f"could not listen on {socket_path}")
    server.start()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    # wait() with a timeout keeps the main thread able to run the signal handler.
    while not stopping.wait(0.5):
        pass
    server.stop(1).wait(2)


async def serve_aio(socket_path: str, kind: str) -> None:
    """The aio echo or the aio bridge, until SIGTERM/SIGINT."""
    server = grpc.aio.server(options=_OPTIONS)
    # The bench's fake vault is on 127.0.0.1: allowed as `serve --allow-vault-host` would.
    instances = Instances(policy=OperatorPolicy(vault_hosts=frozenset({("127.0.0.1", None)})))
    servicer: secretstore_pb2_grpc.SecretStoreServicer = AioEcho() if kind == "echo-aio" else AioBridge(instances)
    secretstore_pb2_grpc.add_SecretStoreServicer_to_server(servicer, server)
    _discoverable(server)
    if server.add_insecure_port(f"unix:{socket_path}") == 0:
        raise SystemExit(f"could not listen on {socket_path}")
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1)
    await instances.close_all()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--socket", required=True, help="Unix socket path to listen on")
    parser.add_argument("--workers", type=int, default=4, help="worker threads (echo-threaded and echo-pool)")
    args = parser.parse_args(argv)
    # Quiet: log lines would cost the server time the benchmark means to measure.
    configure("warning", "json")
    if args.kind in ("echo-threaded", "echo-pool"):
        serve_threaded(args.socket, args.workers, pool=args.kind == "echo-pool")
    else:
        asyncio.run(serve_aio(args.socket, args.kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
