"""Helpers for the gateway tests: a tiny scripted SecretStore on a real Unix socket, free ports,
and real subprocesses (`secretbridge serve`, `secretbridge gateway`) with readiness waits."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection
from secretbridge.proto.components.v1 import common_pb2, secretstore_pb2, secretstore_pb2_grpc

from tests.support import short_tempdir

REPO = Path(__file__).resolve().parent.parent
SERVICE_NAME = secretstore_pb2.DESCRIPTOR.services_by_name["SecretStore"].full_name


@dataclass
class Call:
    """One call the scripted store received."""

    method: str
    instance: str
    key: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


class ScriptedStore(secretstore_pb2_grpc.SecretStoreServicer):
    """A SecretStore whose answers come from its Init metadata.

    - `secrets`: JSON `{name: {key: value}}` served by Get and BulkGet.
    - `features`: comma-separated feature strings.
    - `failInit`: a gRPC code name; Init fails with it.
    - Get on a secret named `err-<CODE>` fails with that code; `empty` answers no data.
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.inits: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def _instance(self, context: grpc.ServicerContext) -> str:
        return dict(context.invocation_metadata()).get("x-component-instance", "")

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def Init(self, request, context):
        instance = self._instance(context)
        props = dict(request.metadata.properties)
        self._record(Call("Init", instance, metadata=props))
        if props.get("failInit"):
            context.abort(grpc.StatusCode[props["failInit"]], f"init refused for {instance}")
        self.inits[instance] = props
        return secretstore_pb2.SecretStoreInitResponse()

    def Features(self, request, context):
        instance = self._instance(context)
        self._record(Call("Features", instance))
        raw = self.inits.get(instance, {}).get("features", "")
        return common_pb2.FeaturesResponse(features=[f for f in raw.split(",") if f])

    def _secrets(self, instance: str) -> dict[str, dict[str, str]]:
        return json.loads(self.inits.get(instance, {}).get("secrets", "{}"))

    def Get(self, request, context):
        instance = self._instance(context)
        self._record(Call("Get", instance, key=request.key, metadata=dict(request.metadata)))
        if request.key.startswith("err-"):
            context.abort(grpc.StatusCode[request.key[4:]], f"scripted failure for {request.key}")
        if request.key == "empty":
            return secretstore_pb2.GetSecretResponse()
        secrets = self._secrets(instance)
        if request.key not in secrets:
            context.abort(grpc.StatusCode.NOT_FOUND, f"secret {request.key} not found")
        return secretstore_pb2.GetSecretResponse(data=secrets[request.key])

    def BulkGet(self, request, context):
        instance = self._instance(context)
        self._record(Call("BulkGet", instance, metadata=dict(request.metadata)))
        if request.metadata.get("fail"):
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted bulk failure")
        return secretstore_pb2.BulkGetSecretResponse(
            data={n: secretstore_pb2.SecretResponse(secrets=v) for n, v in self._secrets(instance).items()}
        )

    def Ping(self, request, context):
        return common_pb2.PingResponse()


@contextlib.contextmanager
def scripted_store(
    folder: Path, name: str = "scripted", services: tuple[str, ...] = (SERVICE_NAME,)
) -> Iterator[ScriptedStore]:
    """Serve a `ScriptedStore` on `folder/<name>.sock` with reflection v1alpha listing `services`."""
    store = ScriptedStore()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    secretstore_pb2_grpc.add_SecretStoreServicer_to_server(store, server)
    reflection.enable_server_reflection((*services, reflection.SERVICE_NAME), server)
    server.add_insecure_port(f"unix://{folder / name}.sock")
    server.start()
    try:
        yield store
    finally:
        server.stop(None)


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes, str]:
    """(status, body, content type) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read(), reply.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def wait_until(check, what: str, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """Poll `check()` until true; fail early (with the process's output) if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not ready after {timeout}s")


def socket_accepts(path: Path) -> bool:
    """Whether a Unix socket accepts a connection."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
    return True


def child_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: this interpreter's, the operator allowing the fakes'
    host (127.0.0.1), plus `extra`."""
    env = dict(os.environ)
    env["SECRETBRIDGE_ALLOW_VAULT_HOSTS"] = "127.0.0.1"
    env.update(extra)
    env.pop("DAPR_COMPONENTS_SOCKETS_FOLDER", None)
    return env


@dataclass
class Proc:
    """A child process whose stderr is collected in a file."""

    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; the exit code (a kill is a test failure upstream)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return int(self.popen.returncode)


def start(args: list[str], log_path: Path, cwd: Path = REPO, env: dict[str, str] | None = None) -> Proc:
    """Start `python -m secretbridge <args>` with JSON logs to `log_path`."""
    handle = open(log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
    popen = subprocess.Popen(
        [sys.executable, "-m", "secretbridge", "--log-format", "json", *args],
        cwd=cwd,
        env=env or child_env(),
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    return Proc(popen, log_path)


@contextlib.contextmanager
def temp_folder(prefix: str = "sbgw-") -> Iterator[Path]:
    """A short temp folder (socket paths must stay under 107 bytes), removed afterwards."""
    folder = short_tempdir(prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Stack:
    """`secretbridge serve` and `secretbridge gateway` as real processes on one socket folder."""

    folder: Path
    serve: Proc
    gateway: Proc
    http_port: int
    grpc_port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1.0"

    def app(self, store: str, *keys: str, metadata: dict[str, str] | None = None) -> dict:
        """Run examples/read_secrets.py (the real dapr SDK plus urllib) against the gateway."""
        args = [sys.executable, str(REPO / "examples" / "read_secrets.py"), "--json", store, *keys]
        for name, value in (metadata or {}).items():
            args += ["--metadata", f"{name}={value}"]
        env = child_env(
            DAPR_HTTP_PORT=str(self.http_port), DAPR_GRPC_PORT=str(self.grpc_port), DAPR_HEALTH_TIMEOUT="20"
        )
        done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return json.loads(done.stdout)

    def stop(self) -> tuple[int, int]:
        """Stop the gateway, then the store; both exit codes."""
        return self.gateway.stop(), self.serve.stop()


@contextlib.contextmanager
def run_stack(
    folder: Path, resources: Path, config: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """Start serve (socket `folder/secretbridge.sock`) and the gateway on free ports; stop both after."""
    serve = start(["serve", "--socket-folder", str(folder), "--http-port", "-1"], folder / "serve.log", env=env)
    gateway: Proc | None = None
    try:
        wait_until(lambda: socket_accepts(folder / "secretbridge.sock"), "serve socket", serve.popen)
        http_port, grpc_port = free_port(), free_port()
        args = [
            "gateway",
            "--resources-path",
            str(resources),
            "--socket-folder",
            str(folder),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
        ]
        if config is not None:
            args += ["--config", str(config)]
        gateway = start(args, folder / "gateway.log", env=env)
        health = f"http://127.0.0.1:{http_port}/v1.0/healthz/outbound"
        wait_until(lambda: http_get(health, timeout=2)[0] == 204, "gateway health", gateway.popen)
        yield Stack(folder, serve, gateway, http_port, grpc_port)
    finally:
        if gateway is not None:
            gateway.stop()
        serve.stop()
