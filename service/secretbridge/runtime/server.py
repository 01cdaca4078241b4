"""The gRPC server daprd talks to: `dapr.proto.components.v1.SecretStore` on a Unix socket.

Serving model (chosen by measurement, see bench/): the threaded `grpc.server`
answers from memory on its worker threads without touching asyncio (cache hits,
and local stores' `read_now`), and hands everything else to one asyncio loop (`LoopThread`) where the backends' async
clients live. The socket also serves gRPC reflection v1alpha (daprd discovers
components with it) and the standard health service.

Errors are mapped to status codes here and only here; the message names the
instance, the backend and the secret, because daprd shows callers only text.

Bulkhead: it counts backend work, not waiters. A call that has to wait on the I/O loop holds
its worker thread until it is answered, so one slow instance could otherwise take every worker
and stall the others' cache hits.
- A remote (cached) instance's cache bounds its own backend work: reads of distinct secrets it
  holds nothing for, and bulk reads, at most the instance's share of the workers at once
  (`instance_share`); a new one past that fails at once with RESOURCE_EXHAUSTED saying the
  backend is saturated. Many callers waiting on one single-flight read are one piece of work,
  and a read answered from a held value (within staleWait at most) takes no share. Their waits
  are "shared" waits for the worker pool (`waiting(shared=True)`): each lends the pool a thread
  beyond `--workers`, so waiters never leave the other instances without a worker.
- Any other call waiting on the loop (Init, local stores' reads on a slow filesystem) holds one
  of its instance's places (`Admission`); a call beyond the share fails at once with
  RESOURCE_EXHAUSTED naming the instance, without taking a worker from anyone else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from secretbridge.azure.redaction import redact
from secretbridge.core import errors
from secretbridge.core.logs import safe_traceback
from secretbridge.core.policy import DEFAULT_WORKERS, STRICT, OperatorPolicy
from secretbridge.core.sockets import DEFAULT_SOCKET_NAME, FOLDER_FLAG, prepare_folder
from secretbridge.proto.components.v1 import common_pb2, secretstore_pb2, secretstore_pb2_grpc
from secretbridge.runtime.instances import DEFAULT_INSTANCE, DEFAULT_MAX_INSTANCES, Instance, Instances, label
from secretbridge.runtime.loop import LoopThread
from secretbridge.runtime.metrics import CALLS, start_http
from secretbridge.runtime.readiness import IDLE_AFTER, READY_GRACE, ReadinessPolicy, readiness
from secretbridge.runtime.state import StateStore, default_state_dir
from secretbridge.runtime.workers import WorkerPool, waiting

log = logging.getLogger(__name__)
T = TypeVar("T")

_SERVICE = secretstore_pb2.DESCRIPTOR.services_by_name["SecretStore"]
SERVICE_NAME = _SERVICE.full_name
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
#: The metric label for calls naming an instance that is not initialised (junk headers stay one series).
UNKNOWN_INSTANCE_LABEL = "(unknown)"


def instance_share(workers: int) -> int:
    """How many workers one instance may hold waiting on its backend: all but an eighth (at least one
    kept back for the others)."""
    return max(1, workers - max(1, workers // 8))


class Admission:
    """Counts, per instance, the calls waiting on the I/O loop, and refuses one past the share."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.limit = instance_share(workers)
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # only instances with calls in flight: bounded by the workers

    def held(self, instance: str) -> int:
        """Calls of `instance` waiting on its backend now."""
        return self._held.get(instance, 0)

    @contextlib.contextmanager
    def enter(self, instance: str) -> Iterator[None]:
        """Hold one of `instance`'s places for the duration, or raise ResourceExhausted at once."""
        with self._lock:
            held = self._held.get(instance, 0)
            if held >= self.limit:
                raise errors.ResourceExhausted(
                    f"{held} calls of this instance are already waiting on its backend, its share of the "
                    f"server's {self.workers} workers (--workers); retry once some have finished"
                )
            self._held[instance] = held + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._held[instance] - 1
                if left:
                    self._held[instance] = left
                else:
                    del self._held[instance]


def status_of(err: errors.SecretStoreError) -> grpc.StatusCode:
    """The code for an error: its class's, or its nearest base class's (INTERNAL: a bug)."""
    for cls in type(err).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


def _instance_of(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == INSTANCE_HEADER:
            return str(value)
    return DEFAULT_INSTANCE


#: The most prebuilt Get answers one instance keeps (see `SecretStoreServicer.Get`).
REPLIES_MAX = 4096
#: The largest answer kept: serializing a value this large costs little beside sending it, and a
#: store of large values (a file may hold megabytes) is not copied into a second store of answers.
REPLY_MAX_BYTES = 64 * 1024


class Reply(NamedTuple):
    """A Get answered from memory, kept by its request bytes: reused while the store still holds `data`."""

    key: str
    data: dict[str, str]
    answer: bytes


class SecretStoreServicer(secretstore_pb2_grpc.SecretStoreServicer):
    """The five RPCs, on the threaded server's workers."""

    def __init__(self, instances: Instances, io: LoopThread, admission: Admission | None = None) -> None:
        self.instances = instances
        self.io = io
        self.admission = admission or Admission(DEFAULT_WORKERS)

    def _count(self, instance: str, method: str, code: grpc.StatusCode, started: float) -> None:
        # Only initialised instances get a series of their own: junk headers cannot grow /metrics.
        known = self.instances.find(instance) is not None
        CALLS.record(instance if known else UNKNOWN_INSTANCE_LABEL, method, code.name, time.monotonic() - started)

    # Every handler runs through _serve so that errors are mapped in one place.
    def _serve(self, method: str, context: grpc.ServicerContext, work: Callable[[str], T]) -> T:
        instance = _instance_of(context)
        started = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            return work(instance)
        except errors.SecretStoreError as err:
            code = status_of(err)
            message = redact(self._message(method, instance, err.message))
            log.info(
                "call failed",
                extra={"method": method, "instance": instance or "(default)", "code": code.name, "cause": message},
            )
            context.abort(code, message)
        except futures.CancelledError:
            # The I/O loop cancelled the call: the server is stopping, which is no bug.
            code = grpc.StatusCode.UNAVAILABLE
            log.info("call cancelled by shutdown", extra={"method": method, "instance": instance or "(default)"})
            context.abort(code, self._message(method, instance, "secretbridge is shutting down; retry"))
        except TimeoutError:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
            context.abort(code, self._message(method, instance, "the call took too long and was abandoned"))
        except Exception as err:
            code = grpc.StatusCode.INTERNAL
            # The stack is what makes a bug fixable; the exception's text may hold a value, so it is
            # left out (classes only), and what remains is scrubbed of tokens and URL credentials.
            log.error(
                "unexpected error (a bug in secretbridge)",
                extra={"method": method, "instance": instance or "(default)", "error_type": type(err).__name__,
                       "traceback": redact(safe_traceback(err))},
            )
            context.abort(
                code,
                self._message(method, instance, f"unexpected {type(err).__name__}; this is a bug in secretbridge"),
            )
        finally:
            self._count(instance, method, code, started)
        raise AssertionError("unreachable")  # context.abort raises

    def _message(self, method: str, instance: str, cause: str) -> str:
        current = self.instances.find(instance) if method != "Init" else None
        where = label(instance) + (f" ({current.backend})" if current is not None else "")
        return f"{method} on {where}: {cause}"

    def _run(self, instance: Instance, coro: Any) -> Any:
        if instance.cached is not None:
            # The cache admits backend work itself (see the module docstring).
            with waiting(shared=True):
                return self.io.run(coro, instance.call_timeout)
        try:
            with self.admission.enter(instance.name), waiting():
                return self.io.run(coro, instance.call_timeout)
        except errors.ResourceExhausted:
            coro.close()  # never scheduled
            raise

    def Init(self, request: secretstore_pb2.SecretStoreInitRequest, context: grpc.ServicerContext) -> Any:
        properties = dict(request.metadata.properties)

        def work(instance: str) -> secretstore_pb2.SecretStoreInitResponse:
            with self.admission.enter(instance), waiting():
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

    def Get(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Get as it travels: a serialized `GetSecretRequest` in, a serialized `GetSecretResponse`
        out (`add_to_server` registers it without (de)serializers).

        The fast path: the same request bytes answered before from memory (a cache hit, a file, the
        environment, a mounted volume), with the value still the very one answered, get the bytes
        sent then, on this worker: no parse, no checks again, no message built or serialized, no
        hop to the asyncio loop. Through daprd those are most of what a hit costs beyond gRPC's
        own work (docs/benchmarks.md, (i)). Anything else takes the full path, which checks
        everything.
        """
        started = time.monotonic()
        name = _instance_of(context)
        instance = self.instances.find(name)
        if instance is not None:
            held = instance.replies.get(request)
            if held is not None:
                try:
                    current = instance.peek(held.key)
                except Exception:
                    current = None  # errors (and bugs) are mapped and logged by the full path, which meets them again
                # Stores hand out the value they hold, never mutated, and a changed value is a new
                # dict: identity says "unchanged".
                if current is held.data:
                    CALLS.record(name, "Get", "OK", time.monotonic() - started)
                    return held.answer

        def work(name: str) -> bytes:
            try:
                parsed = secretstore_pb2.GetSecretRequest.FromString(request)
            except DecodeError:
                raise errors.InvalidArgument("the request is not a GetSecretRequest (it could not be parsed)") from None
            instance = self.instances.get(name)
            key = parsed.key
            asked = instance.check_get(key, parsed.metadata)
            data = instance.peek(key, asked)
            from_memory = data is not None
            if data is None:
                data = self._run(instance, instance.get(key, asked))
            answer = secretstore_pb2.GetSecretResponse(data=data).SerializeToString()
            if not (from_memory and instance.cached is not None):
                # A cache hit is a Key Vault value (25 KB at most); anything else is checked.
                check_answer_size(len(answer), 1, bulk=False)
            if from_memory and not parsed.metadata and len(answer) <= REPLY_MAX_BYTES:
                # Kept only for a request without metadata: the checks above depend on nothing else
                # than the name and the instance, so the same bytes pass them again.
                replies = instance.replies
                if len(replies) >= REPLIES_MAX:
                    replies.clear()  # requests no longer made let go of their answers
                replies[request] = Reply(key, data, answer)
            return answer

        return self._serve("Get", context, work)

    def BulkGet(self, request: secretstore_pb2.BulkGetSecretRequest, context: grpc.ServicerContext) -> Any:
        def work(name: str) -> secretstore_pb2.BulkGetSecretResponse:
            instance = self.instances.get(name)
            options = instance.bulk_options(request.metadata)
            every = self._run(instance, instance.bulk_get(options.limit, options.view))
            response = secretstore_pb2.BulkGetSecretResponse(
                data={key: secretstore_pb2.SecretResponse(secrets=value) for key, value in every.items()}
            )
            check_answer_size(response.ByteSize(), len(every))
            return response

        return self._serve("BulkGet", context, work)

    def Ping(self, request: common_pb2.PingRequest, context: grpc.ServicerContext) -> Any:
        return common_pb2.PingResponse()


def add_to_server(servicer: SecretStoreServicer, server: grpc.Server) -> None:
    """Register the SecretStore service as the generated `add_SecretStoreServicer_to_server` does,
    but with `Get` taking and giving bytes (see `SecretStoreServicer.Get`)."""
    store, common = secretstore_pb2, common_pb2
    handler = grpc.unary_unary_rpc_method_handler
    methods = {
        "Init": handler(servicer.Init, store.SecretStoreInitRequest.FromString,
                        store.SecretStoreInitResponse.SerializeToString),
        "Features": handler(servicer.Features, common.FeaturesRequest.FromString,
                            common.FeaturesResponse.SerializeToString),
        "Get": handler(servicer.Get),
        "BulkGet": handler(servicer.BulkGet, store.BulkGetSecretRequest.FromString,
                           store.BulkGetSecretResponse.SerializeToString),
        "Ping": handler(servicer.Ping, common.PingRequest.FromString, common.PingResponse.SerializeToString),
    }
    if set(methods) != set(_SERVICE.methods_by_name):
        raise AssertionError("the SecretStore service's methods changed: register every one of them here")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, methods),))
    server.add_registered_method_handlers(SERVICE_NAME, methods)


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
    """Make room for the socket: remove a stale socket file, refuse a live one.

    A socket something still answers on belongs to a live process (another
    secretbridge, perhaps): taking it over would cut daprd off from that one.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise errors.FailedPrecondition(f"{path} exists and is not a socket; refusing to replace it (--name)")
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
    raise errors.FailedPrecondition(
        f"another process is serving on {path}; it is left alone: stop it, or choose another --name or "
        f"{FOLDER_FLAG}"
    )


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    # The socket file is created by bind(); with this umask it is never open to others, not even
    # for the moment before chmod.
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@dataclass
class ServerOptions:
    """How `secretbridge serve` was asked to run."""

    socket_folder: Path
    name: str = DEFAULT_SOCKET_NAME
    #: Owner and group only: daprd connects through the socket's group (--socket-group).
    socket_mode: int = 0o660
    #: The socket's group (a gid); None keeps the process's own group.
    socket_group: int | None = None
    workers: int = DEFAULT_WORKERS
    http_host: str = "0.0.0.0"
    http_port: int | None = 8081  # None: no HTTP endpoint
    shutdown_grace: float = 5.0
    #: What the operator allowed beyond the defaults (vault hosts outside Azure, size caps).
    policy: OperatorPolicy = STRICT
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
        # File reads run on the loop's executor (asyncio.to_thread); asyncio's default of a few threads
        # would let one instance's stuck mount hold them all. As many as the workers, plus a margin: the
        # admission share then bounds what one instance can hold here too.
        self.io.loop.set_default_executor(
            futures.ThreadPoolExecutor(max_workers=options.workers + 8, thread_name_prefix="secretbridge-files")
        )
        state = options.state_path
        self.instances = Instances(
            max_instances=options.max_instances,
            state=StateStore(state) if state is not None else None,
            policy=options.policy,
            work_limit=instance_share(options.workers),
        )
        self.admission = Admission(options.workers)
        self.health = health.HealthServicer()
        self._grpc: grpc.Server | None = None
        self._workers: WorkerPool | None = None
        self._http: Any = None
        self.http_port: int | None = None
        self._stopped = threading.Event()
        #: (device, inode) of the socket file this server bound: the only one stop() removes.
        self._bound: tuple[int, int] | None = None
        #: Keeps remote instances' held names on disk for a warm restart (see Instances.keep_names).
        self._names: futures.Future[None] | None = None

    @property
    def socket_path(self) -> Path:
        return self.options.socket_path

    def _check_options(self) -> None:
        name, mode, workers = self.options.name, self.options.socket_mode, self.options.workers
        if not name or "/" in name or name in (".", ".."):
            raise errors.InvalidArgument(f"--name {name!r} must be a plain file name")
        if not 0 <= mode <= 0o777:
            raise errors.InvalidArgument(f"--socket-mode {mode:o} is not a file mode (0000 to 0777)")
        if workers < 2:
            raise errors.InvalidArgument(f"--workers {workers} must be at least 2")
        if len(os.fsencode(self.socket_path)) > 107:
            raise errors.InvalidArgument(
                f"the socket path {self.socket_path} is longer than a Unix socket path may be (107 bytes); "
                f"choose a shorter {FOLDER_FLAG} or --name"
            )

    def start(self) -> SecretBridgeServer:
        """Bind the HTTP port, then the socket, and start serving; returns once daprd could connect.

        Raises the project's errors with a message naming the flag at fault; on failure nothing
        is left behind (no socket file, no port, no thread).
        """
        self._check_options()
        self.io.start()
        try:
            if self.options.http_port is not None:
                self._start_http()
            self._bind()
        except BaseException:
            self._abandon()
            raise
        if self.instances.state is not None:
            self._names = self.io.submit(self.instances.keep_names())
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            extra={"socket": str(self.socket_path), "component_type": f"secretstores.{self.options.name}",
                   "http_port": self.http_port},
        )
        return self

    def _start_http(self) -> None:
        host, port = self.options.http_host, self.options.http_port
        assert port is not None
        try:
            self._http, self.http_port = self.io.run(start_http(host, port, self.readiness), 10)
        except OSError as err:
            raise errors.FailedPrecondition(
                f"cannot listen on {host}:{port} for /metrics, /healthz and /readyz ({err.strerror or err}); "
                "choose another --http-port (or --http-host), or -1 to turn it off"
            ) from None

    def _bind(self) -> None:
        path, mode = self.socket_path, self.options.socket_mode
        for warning in prepare_folder(self.options.socket_folder):
            log.warning(warning, extra={"socket": str(path)})
        _prepare_socket(path)
        # Saved instances open before daprd can connect (bounded: see _recover), once the folder
        # they are kept in has passed the checks above.
        self._recover()
        self._workers = WorkerPool(self.options.workers, thread_name_prefix="secretbridge-grpc")
        server = grpc.server(
            self._workers,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # Never send what daprd cannot read; BulkGet says so first (check_answer_size).
                ("grpc.max_send_message_length", DAPRD_MAX_RECEIVE_BYTES),
            ],
        )
        servicer = SecretStoreServicer(self.instances, self.io, self.admission)
        add_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        try:
            with _umask(0o177):
                bound = server.add_insecure_port(f"unix:{path}")
        except RuntimeError:  # newer grpcio raises where older ones returned 0
            bound = 0
        if bound == 0:
            raise errors.FailedPrecondition(f"could not listen on {path} (--socket-folder, --name)")
        info = path.lstat()
        self._bound = (info.st_dev, info.st_ino)
        self._grpc = server
        group = self.options.socket_group
        try:
            if group is not None and group != info.st_gid:
                os.chown(path, -1, group)
        except OSError as err:
            raise errors.FailedPrecondition(
                f"cannot give the socket to group {group} ({err.strerror}): this process must be root or a member "
                "of that group (--socket-group)"
            ) from None
        try:
            os.chmod(path, mode)
        except OSError as err:
            raise errors.FailedPrecondition(f"cannot set the socket's mode ({err.strerror}) (--socket-mode)") from None
        if mode & 0o007:
            log.warning(
                "the socket is open to every local user (--socket-mode): anyone on this host can initialise "
                "instances, read every secret they serve and use this sidecar's identity",
                extra={"socket": str(path), "socket_mode": f"{mode:04o}"},
            )
        server.start()

    def _abandon(self) -> None:
        """Undo a start that failed half-way."""
        if self._grpc is not None:
            self._grpc.stop(0).wait(2)
            self._grpc = None
        if self._workers is not None:
            self._workers.shutdown(wait=False)
        if self._http is not None:
            with contextlib.suppress(Exception):
                self.io.run(self._http.cleanup(), 2)
            self._http = None
        self.io.stop()
        self._remove_socket()

    def _remove_socket(self) -> None:
        # Only the socket this server bound: one found there may belong to another live server.
        if self._bound is None:
            return
        with contextlib.suppress(FileNotFoundError):
            info = self.socket_path.lstat()
            if stat.S_ISSOCK(info.st_mode) and (info.st_dev, info.st_ino) == self._bound:
                self.socket_path.unlink()
        self._bound = None

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
        if self._grpc is None:  # never started, or a failed start already cleaned up
            self._stopped.set()
            return
        self.health.enter_graceful_shutdown()
        if self._grpc is not None:
            self._grpc.stop(self.options.shutdown_grace).wait(self.options.shutdown_grace + 1)
        if self._workers is not None:
            self._workers.shutdown(wait=False)  # idle workers end; a call past the grace ends on its own
        if self._names is not None:
            self._names.cancel()
        with contextlib.suppress(Exception):
            self.io.run(self.instances.close_all(), 5)  # keeps the held names one last time
        if self._http is not None:
            with contextlib.suppress(Exception):
                self.io.run(self._http.cleanup(), 2)
        self.io.stop()
        self._remove_socket()
        log.info("stopped", extra={"socket": str(self.socket_path)})
        self._stopped.set()
