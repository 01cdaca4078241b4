"""The gRPC server daprd talks to: `dapr.proto.components.v1.SecretStore` on a Unix socket.

Serving model (chosen by measurement, see bench/): the threaded `grpc.server`
answers cache hits on its worker threads without touching asyncio, and hands
everything else to one asyncio loop (`LoopThread`) where the backends' async
clients live. The socket also serves gRPC reflection v1alpha (daprd discovers
components with it) and the standard health service.

Errors are mapped to status codes here and only here; the message names the
instance, the backend and the secret, because daprd shows callers only text.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from secretbridge.core import errors
from secretbridge.core.names import bulk_options
from secretbridge.core.sockets import DEFAULT_SOCKET_NAME
from secretbridge.proto.components.v1 import common_pb2, secretstore_pb2, secretstore_pb2_grpc
from secretbridge.runtime.instances import DEFAULT_INSTANCE, DEFAULT_MAX_INSTANCES, Instance, Instances, label
from secretbridge.runtime.loop import LoopThread
from secretbridge.runtime.metrics import REQUEST_SECONDS, REQUESTS, start_http
from secretbridge.runtime.readiness import IDLE_AFTER, READY_GRACE, ReadinessPolicy, readiness
from secretbridge.runtime.state import StateStore, default_state_dir

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAME = secretstore_pb2.DESCRIPTOR.services_by_name["SecretStore"].full_name
INSTANCE_HEADER = "x-component-instance"
#: What we accept from daprd (Init metadata, request metadata); daprd's own send limit is larger.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: What daprd accepts in one answer: grpc-go's default receive limit, which daprd does not raise.
#: An answer over it is refused here with a message that says so, instead of failing inside daprd.
DAPRD_MAX_RECEIVE_BYTES = 4 * 1024 * 1024
#: daprd gives dial + Init + Features 5 s (`initTimeout`) and reports a late answer as a failure;
#: Init answers within this, whatever the backend does (failFast's check has FAIL_FAST_BUDGET of it).
INIT_TIMEOUT = 4.0
#: How long `serve` waits for saved instances to open before binding the socket; the rest open
#: in the background, and a call for one waits for it.
RECOVERY_AT_START = 2.0

STATUS_BY_ERROR: dict[type[errors.SecretStoreError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _instance_of(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == INSTANCE_HEADER:
            return str(value)
    return DEFAULT_INSTANCE


class SecretStoreServicer(secretstore_pb2_grpc.SecretStoreServicer):
    """The five RPCs, on the threaded server's workers."""

    def __init__(self, instances: Instances, io: LoopThread) -> None:
        self.instances = instances
        self.io = io

    # Every handler runs through _serve so that errors are mapped in one place.
    def _serve(self, method: str, context: grpc.ServicerContext, work: Callable[[str], T]) -> T:
        instance = _instance_of(context)
        started = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            return work(instance)
        except errors.SecretStoreError as err:
            code = STATUS_BY_ERROR.get(type(err), grpc.StatusCode.INTERNAL)
            message = self._message(method, instance, err.message)
            log.info(
                "call failed",
                extra={"method": method, "instance": instance or "(default)", "code": code.name, "cause": message},
            )
            context.abort(code, message)
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            context.abort(code, self._message(method, instance, "the call took too long and was abandoned"))
        except Exception as err:
            code = grpc.StatusCode.INTERNAL
            # Exception text may come from a library; log its type, not its message.
            log.exception(
                "unexpected error (a bug in secretbridge)",
                extra={"method": method, "instance": instance or "(default)", "error_type": type(err).__name__},
            )
            context.abort(
                code,
                self._message(method, instance, f"unexpected {type(err).__name__}; this is a bug in secretbridge"),
            )
        finally:
            REQUESTS.labels(instance, method, code.name).inc()
            REQUEST_SECONDS.labels(method).observe(time.monotonic() - started)
        raise AssertionError("unreachable")  # context.abort raises

    def _message(self, method: str, instance: str, cause: str) -> str:
        current = self.instances.find(instance) if method != "Init" else None
        where = label(instance) + (f" ({current.backend})" if current is not None else "")
        return f"{method} on {where}: {cause}"

    def _run(self, instance: Instance, coro: Any) -> Any:
        return self.io.run(coro, instance.call_timeout)

    def Init(self, request: secretstore_pb2.SecretStoreInitRequest, context: grpc.ServicerContext) -> Any:
        properties = dict(request.metadata.properties)

        def work(instance: str) -> secretstore_pb2.SecretStoreInitResponse:
            try:
                self.io.run(self.instances.init(instance, properties), INIT_TIMEOUT)
            except TimeoutError:
                raise errors.DeadlineExceeded(
                    f"Init did not finish within {INIT_TIMEOUT:g}s and was abandoned (daprd gives dial, Init "
                    "and Features 5s); nothing was kept"
                ) from None
            return secretstore_pb2.SecretStoreInitResponse()

        return self._serve("Init", context, work)

    def Features(self, request: common_pb2.FeaturesRequest, context: grpc.ServicerContext) -> Any:
        return self._serve(
            "Features",
            context,
            lambda name: common_pb2.FeaturesResponse(features=self.instances.get(name).features()),
        )

    def Get(self, request: secretstore_pb2.GetSecretRequest, context: grpc.ServicerContext) -> Any:
        def work(name: str) -> secretstore_pb2.GetSecretResponse:
            instance = self.instances.get(name)
            key = request.key
            version = instance.check_get(key, request.metadata)
            data = instance.peek(key, version)
            if data is None:
                data = self._run(instance, instance.get(key, version))
                # Checked off the hit path: local stores always come here, Key Vault caps values at 25 KB.
                response = secretstore_pb2.GetSecretResponse(data=data)
                check_answer_size(response.ByteSize(), 1, bulk=False)
                return response
            return secretstore_pb2.GetSecretResponse(data=data)

        return self._serve("Get", context, work)

    def BulkGet(self, request: secretstore_pb2.BulkGetSecretRequest, context: grpc.ServicerContext) -> Any:
        def work(name: str) -> secretstore_pb2.BulkGetSecretResponse:
            instance = self.instances.get(name)
            options = bulk_options(request.metadata)
            every = self._run(instance, instance.bulk_get(options.limit))
            response = secretstore_pb2.BulkGetSecretResponse(
                data={key: secretstore_pb2.SecretResponse(secrets=value) for key, value in every.items()}
            )
            check_answer_size(response.ByteSize(), len(every))
            return response

        return self._serve("BulkGet", context, work)

    def Ping(self, request: common_pb2.PingRequest, context: grpc.ServicerContext) -> Any:
        return common_pb2.PingResponse()


def check_answer_size(size: int, count: int, *, bulk: bool = True) -> None:
    """Refuse an answer daprd could not read, saying why and (BulkGet) what to ask for instead.

    Sent anyway, it would fail inside daprd as an opaque ResourceExhausted ("received message
    larger than max") that the app sees as a 500.
    """
    if size <= DAPRD_MAX_RECEIVE_BYTES:
        return
    over = (
        f"the answer would be {size / (1 << 20):.1f} MiB ({size} bytes), over the 4 MiB "
        f"({DAPRD_MAX_RECEIVE_BYTES} bytes) daprd accepts in one answer (grpc-go's default receive limit)"
    )
    if not bulk:
        raise errors.ResourceExhausted(f"{over}; this secret is too large to serve through daprd")
    fits = max(1, int(count * DAPRD_MAX_RECEIVE_BYTES / size * 0.9))
    raise errors.ResourceExhausted(
        f"{over}, with {count} secrets; ask for fewer with the request metadata maxresults (about {fits} "
        "fit; on daprd's HTTP API ?metadata.maxresults=N), or read the large secrets one by one with Get"
    )


def _prepare_socket(path: Path) -> None:
    """Make room for the socket: create the folder, remove a stale socket file.

    A socket something still answers on belongs to a live process (another
    secretbridge, perhaps): taking it over would cut daprd off from that one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise errors.FailedPrecondition(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # stale: left by a process that died
        log.info("removed a stale socket file", extra={"socket": str(path)})
        return
    finally:
        probe.close()
    raise errors.FailedPrecondition(f"another process is serving on {path}; stop it or choose another --name")


@dataclass
class ServerOptions:
    """How `secretbridge serve` was asked to run."""

    socket_folder: Path
    name: str = DEFAULT_SOCKET_NAME
    socket_mode: int = 0o666  # daprd runs as another user and must be able to connect
    workers: int = 16
    http_host: str = "0.0.0.0"
    http_port: int | None = 8081  # None: no HTTP endpoint
    shutdown_grace: float = 5.0
    #: Where instances' Init metadata is kept for a restart; None: beside the socket (see runtime/state.py).
    state_dir: Path | None = None
    #: False: keep nothing; after a restart every instance waits for an Init that daprd never sends.
    keep_state: bool = True
    max_instances: int = DEFAULT_MAX_INSTANCES
    ready_grace: float = READY_GRACE
    idle_after: float = IDLE_AFTER

    @property
    def socket_path(self) -> Path:
        return self.socket_folder / f"{self.name}.sock"

    @property
    def state_path(self) -> Path | None:
        if not self.keep_state:
            return None
        return self.state_dir if self.state_dir is not None else default_state_dir(self.socket_folder, self.name)


class SecretBridgeServer:
    """Owns the socket, the gRPC server, the I/O loop, the instances and the HTTP endpoint."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.io = LoopThread()
        state = options.state_path
        self.instances = Instances(
            max_instances=options.max_instances, state=StateStore(state) if state is not None else None
        )
        self.health = health.HealthServicer()
        self._grpc: grpc.Server | None = None
        self._http: Any = None
        self.http_port: int | None = None
        self._stopped = threading.Event()

    @property
    def socket_path(self) -> Path:
        return self.options.socket_path

    def start(self) -> SecretBridgeServer:
        """Bind the socket and start serving; returns once daprd could connect."""
        path = self.socket_path
        if not self.options.name or "/" in self.options.name:
            raise errors.InvalidArgument(f"--name {self.options.name!r} must be a plain file name")
        _prepare_socket(path)
        self.io.start()
        self._recover()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.options.workers, thread_name_prefix="secretbridge-grpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # Never send what daprd cannot read; BulkGet says so first (check_answer_size).
                ("grpc.max_send_message_length", DAPRD_MAX_RECEIVE_BYTES),
            ],
        )
        secretstore_pb2_grpc.add_SecretStoreServicer_to_server(SecretStoreServicer(self.instances, self.io), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if server.add_insecure_port(f"unix:{path}") == 0:
            raise errors.FailedPrecondition(f"could not listen on {path}")
        server.start()
        os.chmod(path, self.options.socket_mode)
        self._grpc = server
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        if self.options.http_port is not None:
            self._http, self.http_port = self.io.run(
                start_http(self.options.http_host, self.options.http_port, self.readiness), 10
            )
        log.info(
            "serving",
            extra={"socket": str(path), "component_type": f"secretstores.{self.options.name}",
                   "http_port": self.http_port},
        )
        return self

    def _recover(self) -> None:
        """Open again the instances kept before a restart: daprd will not send their Init again.

        Waits at most RECOVERY_AT_START so the socket is bound in time for daprd; what is
        still opening then finishes in the background, and a call for it waits for it.
        """
        store = self.instances.state
        if store is None:
            return
        todo = self.instances.plan_recovery(store.load())
        if not todo:
            return
        opening = self.io.submit(self.instances.recover(todo))
        with contextlib.suppress(futures.TimeoutError):
            opening.result(RECOVERY_AT_START)

    def readiness(self, verbose: bool = False) -> tuple[bool, dict[str, Any]]:
        """Can this sidecar serve? (`/readyz`; see `runtime/readiness.py`.)"""
        path = self.socket_path
        try:
            bound = self._grpc is not None and stat.S_ISSOCK(path.lstat().st_mode)
        except OSError:
            bound = False
        policy = ReadinessPolicy(grace=self.options.ready_grace, idle_after=self.options.idle_after)
        return readiness(self.instances, policy, socket=path, bound=bound, verbose=verbose)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until `stop()` has finished."""
        return self._stopped.wait(timeout)

    def stop(self) -> None:
        """Finish in-flight calls (up to the grace period), close every store, remove the socket."""
        if self._stopped.is_set():
            return
        self.health.enter_graceful_shutdown()
        if self._grpc is not None:
            self._grpc.stop(self.options.shutdown_grace).wait(self.options.shutdown_grace + 1)
        with contextlib.suppress(Exception):
            self.io.run(self.instances.close_all(), 5)
        if self._http is not None:
            with contextlib.suppress(Exception):
                self.io.run(self._http.cleanup(), 2)
        self.io.stop()
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                self.socket_path.unlink()
        log.info("stopped", extra={"socket": str(self.socket_path)})
        self._stopped.set()
