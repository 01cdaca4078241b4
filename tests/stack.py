"""The end-to-end stack, in one place: `secretbridge serve` on a socket folder, a runtime in front of it
(the real daprd, or the development gateway), and the example app (the real dapr SDK plus plain HTTP)
reading secrets through the runtime. All real processes, on free loopback ports and Unix sockets.

- `start_serve(folder)` starts `secretbridge serve` and waits for its socket.
- A `Runtime` starts what daprd's place is taken by, on free HTTP and gRPC ports, and says when it is ready.
- `run_stack(...)` (a context manager) and the `e2e_stack` fixture (a factory that stops every stack it
  started) put both together and hand back a `Stack`: ports, URLs, logs, the app runner.

The runtime is picked by name (`runtime="daprd"`), or by `SECRETBRIDGE_E2E_RUNTIME` for a whole run.
daprd comes from tools/daprd/get_daprd.py (what `make daprd` runs); when it cannot be had, a daprd
case skips with one line saying how to get it, except under CI (`CI=true`), where that fails the run:
a suite that silently stopped testing against the real runtime would prove nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import pytest

from tests.support import short_tempdir

REPO = Path(__file__).resolve().parent.parent
SOCKET_NAME = "secretbridge"


# -- processes and ports ------------------------------------------------------------------------


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


def wait_until(
    check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0
) -> None:
    """Poll `check()` until true; fail early if `proc` exits."""
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
    """A child process whose output is collected in a file."""

    popen: subprocess.Popen[bytes]
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
    return start_command([sys.executable, "-m", "secretbridge", "--log-format", "json", *args], log_path, cwd, env)


def start_command(command: list[str], log_path: Path, cwd: Path = REPO, env: dict[str, str] | None = None) -> Proc:
    """Start any command with its output to `log_path`."""
    handle = open(log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
    popen = subprocess.Popen(command, cwd=cwd, env=env or child_env(), stdout=handle, stderr=subprocess.STDOUT)
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


def start_serve(folder: Path, env: dict[str, str] | None = None, *extra: str) -> Proc:
    """`secretbridge serve` on `folder/secretbridge.sock`, once the socket accepts connections."""
    serve = start(["serve", "--socket-folder", str(folder), "--http-port", "-1", *extra], folder / "serve.log", env=env)
    try:
        wait_until(lambda: socket_accepts(folder / f"{SOCKET_NAME}.sock"), "serve socket", serve.popen)
    except BaseException:
        serve.stop()
        raise
    return serve


# -- runtimes: what stands where daprd stands ---------------------------------------------------


@dataclass(frozen=True)
class Ports:
    """Where the app reaches the runtime (DAPR_HTTP_PORT, DAPR_GRPC_PORT)."""

    http: int
    grpc: int


class Runtime(Protocol):
    """Starts daprd's stand-in beside a running `secretbridge serve` and waits until it serves."""

    name: str

    def start(
        self, *, folder: Path, resources: Path, config: Path | None, env: dict[str, str] | None, ports: Ports,
        api_token: str | None = None,
    ) -> Proc:
        """Start it (Components from `resources`, its socket folder `folder`; `api_token` as
        DAPR_API_TOKEN); return once ready."""
        ...


class GatewayRuntime:
    """`secretbridge gateway`: the development stand-in for daprd's secrets API."""

    name = "gateway"

    def start(
        self, *, folder: Path, resources: Path, config: Path | None, env: dict[str, str] | None, ports: Ports,
        api_token: str | None = None,
    ) -> Proc:
        args = [
            "gateway", "--resources-path", str(resources), "--socket-folder", str(folder),
            "--http-port", str(ports.http), "--grpc-port", str(ports.grpc), "--app-id", APP_ID,
        ]
        if config is not None:
            args += ["--config", str(config)]
        child = dict(env or child_env())
        child.pop("DAPR_API_TOKEN", None)
        if api_token is not None:
            child["DAPR_API_TOKEN"] = api_token
        gateway = start(args, folder / "gateway.log", env=child)
        health = f"http://127.0.0.1:{ports.http}/v1.0/healthz/outbound"
        try:
            wait_until(lambda: http_get(health, timeout=2)[0] == 204, "gateway health", gateway.popen)
        except BaseException:
            gateway.stop()
            raise
        return gateway


GET_DAPRD = REPO / "tools" / "daprd" / "get_daprd.py"
HOW_TO_GET_DAPRD = "run `make daprd` (builds it with Go from the module proxy) or set DAPRD=/path/to/daprd"
#: The app id both runtimes run with (Component scopes and `{appID}` see it).
APP_ID = "app"


@cache
def _daprd_or_reason() -> tuple[Path | None, str]:
    spec = importlib.util.spec_from_file_location("get_daprd", GET_DAPRD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    try:
        return module.find_daprd(progress=True), ""
    except module.DaprdError as err:
        return None, str(err)


def daprd_binary() -> Path:
    """The daprd to test against; skips (or, under CI, fails) with the reason when there is none."""
    path, reason = _daprd_or_reason()
    if path is None:
        message = f"no daprd: {reason}; {HOW_TO_GET_DAPRD}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def daprd_env(folder: Path, env: dict[str, str] | None) -> dict[str, str]:
    """daprd's environment: the socket folder it scans, and nothing that reaches for a control plane."""
    child = dict(env or child_env())
    child["DAPR_COMPONENTS_SOCKETS_FOLDER"] = str(folder)
    for name in ("DAPR_SCHEDULER_HOST_ADDRESS_DNS_A", "NAMESPACE", "DAPR_PLACEMENT_HOST_ADDRESS", "DAPR_API_TOKEN"):
        child.pop(name, None)
    return child


def daprd_command(binary: Path, *, resources: Path, http: int, grpc: int, config: Path | None) -> list[str]:
    """daprd standalone (no placement, scheduler or sentry) listening on loopback only."""
    command = [
        str(binary), "--app-id", APP_ID, "--mode", "standalone", "--resources-path", str(resources),
        "--dapr-listen-addresses", "127.0.0.1", "--dapr-http-port", str(http), "--dapr-grpc-port", str(grpc),
        "--dapr-internal-grpc-port", str(free_port()), "--dapr-internal-grpc-listen-address", "127.0.0.1",
        "--dapr-public-port", str(free_port()), "--dapr-public-listen-address", "127.0.0.1",
        "--metrics-port", str(free_port()), "--metrics-listen-address", "127.0.0.1",
        "--dapr-graceful-shutdown-seconds", "1", "--log-level", "info",
    ]
    if config is not None:
        command += ["--config", str(config)]
    return command


class DaprdRuntime:
    """The real daprd (the lean build of tools/daprd), standalone."""

    name = "daprd"

    def start(
        self, *, folder: Path, resources: Path, config: Path | None, env: dict[str, str] | None, ports: Ports,
        api_token: str | None = None,
    ) -> Proc:
        child = daprd_env(folder, env)
        if api_token is not None:
            child["DAPR_API_TOKEN"] = api_token
        command = daprd_command(daprd_binary(), resources=resources, http=ports.http, grpc=ports.grpc, config=config)
        daprd = start_command(command, folder / "daprd.log", env=child)
        health = f"http://127.0.0.1:{ports.http}/v1.0/healthz"
        try:
            wait_until(lambda: http_get(health, timeout=2)[0] == 204, "daprd health", daprd.popen, timeout=60)
        except AssertionError:
            daprd.stop()
            raise AssertionError(f"daprd did not become healthy; its log:\n{daprd.log()[-4000:]}") from None
        return daprd


#: Runtimes by name.
RUNTIMES: dict[str, Runtime] = {"daprd": DaprdRuntime(), "gateway": GatewayRuntime()}


def runtime_named(name: str | None = None) -> Runtime:
    """The runtime called `name`, else `SECRETBRIDGE_E2E_RUNTIME`, else the gateway."""
    chosen = name or os.environ.get("SECRETBRIDGE_E2E_RUNTIME") or "gateway"
    if chosen not in RUNTIMES:
        raise KeyError(f"no end-to-end runtime {chosen!r}; known: {', '.join(RUNTIMES)}")
    return RUNTIMES[chosen]


# -- the stack ----------------------------------------------------------------------------------


@dataclass
class Stack:
    """`secretbridge serve` and a runtime as real processes on one socket folder."""

    folder: Path
    serve: Proc | None
    runtime: Proc
    runtime_name: str
    ports: Ports
    api_token: str | None = None

    @property
    def gateway(self) -> Proc:
        """The runtime's process (named for the gateway, which it is unless another runtime was chosen)."""
        return self.runtime

    @property
    def http_port(self) -> int:
        return self.ports.http

    @property
    def grpc_port(self) -> int:
        return self.ports.grpc

    @property
    def base(self) -> str:
        """The runtime's HTTP API root, `http://127.0.0.1:<port>/v1.0`."""
        return f"http://127.0.0.1:{self.ports.http}/v1.0"

    @property
    def socket_path(self) -> Path:
        return self.folder / f"{SOCKET_NAME}.sock"

    def app_env(self) -> dict[str, str]:
        """What an app beside this runtime has in its environment (the dapr SDK reads these)."""
        env = child_env(
            DAPR_HTTP_PORT=str(self.ports.http), DAPR_GRPC_PORT=str(self.ports.grpc), DAPR_HEALTH_TIMEOUT="30"
        )
        env.pop("DAPR_API_TOKEN", None)
        if self.api_token is not None:
            env["DAPR_API_TOKEN"] = self.api_token
        return env

    def app(
        self, store: str, *keys: str, metadata: dict[str, str] | None = None, env: dict[str, str] | None = None
    ) -> dict:  # type: ignore[type-arg]
        """Run examples/read_secrets.py (the real dapr SDK plus urllib) against the runtime."""
        args = [sys.executable, str(REPO / "examples" / "read_secrets.py"), "--json", store, *keys]
        for name, value in (metadata or {}).items():
            args += ["--metadata", f"{name}={value}"]
        done = subprocess.run(
            args, env=env or self.app_env(), cwd=REPO, capture_output=True, timeout=90, check=False
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def logs(self) -> str:
        """Both processes' output so far."""
        return self.runtime.log() + (self.serve.log() if self.serve is not None else "")

    def stop(self) -> tuple[int, int]:
        """Stop the runtime, then the store (when this stack started it); both exit codes."""
        return self.runtime.stop(), self.serve.stop() if self.serve is not None else 0


def write_resources(folder: Path, components: str, config: str | None = None) -> tuple[Path, Path | None]:
    """`folder/resources/components.yaml` (and `folder/config.yaml`): what a runtime loads."""
    resources = folder / "resources"
    resources.mkdir(exist_ok=True)
    (resources / "components.yaml").write_text(components)
    config_path = None
    if config is not None:
        config_path = folder / "config.yaml"
        config_path.write_text(config)
    return resources, config_path


def start_runtime(
    runtime: str | Runtime | None,
    folder: Path,
    resources: Path,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    *,
    api_token: str | None = None,
    serve: Proc | None = None,
) -> Stack:
    """A runtime on free ports in front of the `serve` already on `folder` (the caller stops both)."""
    chosen = runtime if runtime is not None and not isinstance(runtime, str) else runtime_named(runtime)
    ports = Ports(free_port(), free_port())
    proc = chosen.start(folder=folder, resources=resources, config=config, env=env, ports=ports, api_token=api_token)
    return Stack(folder, serve, proc, chosen.name, ports, api_token)


@contextlib.contextmanager
def run_stack(
    folder: Path,
    resources: Path,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    runtime: str | Runtime | None = None,
    *,
    api_token: str | None = None,
) -> Iterator[Stack]:
    """Start serve (socket `folder/secretbridge.sock`) first, since daprd scans the folder once at start,
    then a runtime on free ports; stop both after."""
    serve = start_serve(folder, env)
    stack: Stack | None = None
    try:
        stack = start_runtime(runtime, folder, resources, config, env, api_token=api_token, serve=serve)
        yield stack
    finally:
        if stack is not None:
            stack.runtime.stop()
        serve.stop()


StackFactory = Callable[..., Stack]


@pytest.fixture
def e2e_stack() -> Iterator[StackFactory]:
    """`e2e_stack(components_yaml, config_yaml=None, *, env, runtime, files, prepare)`: a running
    `Stack` in a fresh folder. `files={name: text}` are written there first and `prepare(folder)` is
    called before anything starts; `{folder}` in any text is replaced by the folder's path. Every
    stack started is stopped and its folder removed afterwards."""
    with contextlib.ExitStack() as cleanup:

        def make(
            components: str,
            config: str | None = None,
            *,
            env: dict[str, str] | None = None,
            runtime: str | Runtime | None = None,
            files: dict[str, str] | None = None,
            prepare: Callable[[Path], None] | None = None,
        ) -> Stack:
            folder = cleanup.enter_context(temp_folder())
            if prepare is not None:
                prepare(folder)
            for name, text in (files or {}).items():
                (folder / name).write_text(text.replace("{folder}", str(folder)))
            resources, config_path = write_resources(
                folder, components.replace("{folder}", str(folder)),
                config.replace("{folder}", str(folder)) if config is not None else None,
            )
            return cleanup.enter_context(run_stack(folder, resources, config_path, env, runtime))

        yield make
