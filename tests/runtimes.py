"""The Dapr runtimes an end-to-end test can put between the app and `secretbridge serve`.

`daprd` is the real runtime, found or built by tools/daprd/get_daprd.py (what `make daprd` runs);
`gateway` is secretbridge's development stand-in. Both run as real processes on free loopback ports
and reach secretbridge through its Unix socket, so one test body runs against either
(`runtime` fixture, parametrised over `RUNTIMES`).

When daprd cannot be had, the daprd cases skip with one line saying how to get it, except under
CI (`CI=true`), where that fails the run: a suite that silently stopped testing against the real
runtime would prove nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from tests.gateway_support import REPO, Proc, child_env, free_port, http_get, start, wait_until

RUNTIMES = ("daprd", "gateway")
GET_DAPRD = REPO / "tools" / "daprd" / "get_daprd.py"
HOW_TO_GET = "run `make daprd` (builds it with Go from the module proxy) or set DAPRD=/path/to/daprd"


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
        message = f"no daprd: {reason}; {HOW_TO_GET}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@dataclass
class Runtime:
    """A running daprd or gateway: where the app reaches it, and its log."""

    kind: str
    proc: Proc
    http_port: int
    grpc_port: int
    api_token: str | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1.0"

    def app_env(self) -> dict[str, str]:
        """What an app next to this runtime has in its environment (the SDK reads these)."""
        env = child_env(
            DAPR_HTTP_PORT=str(self.http_port), DAPR_GRPC_PORT=str(self.grpc_port), DAPR_HEALTH_TIMEOUT="30"
        )
        if self.api_token is not None:
            env["DAPR_API_TOKEN"] = self.api_token
        else:
            env.pop("DAPR_API_TOKEN", None)
        return env

    def log(self) -> str:
        return self.proc.log()

    def stop(self) -> int:
        return self.proc.stop()


def _daprd_env(socket_folder: Path, extra: dict[str, str] | None) -> dict[str, str]:
    env = child_env(**(extra or {}))
    env["DAPR_COMPONENTS_SOCKETS_FOLDER"] = str(socket_folder)
    # Any of these would reach for a control plane or filter the Components away.
    for name in ("DAPR_SCHEDULER_HOST_ADDRESS_DNS_A", "NAMESPACE", "DAPR_PLACEMENT_HOST_ADDRESS"):
        env.pop(name, None)
    return env


def start_daprd(
    resources: Path,
    socket_folder: Path,
    log_path: Path,
    *,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    api_token: str | None = None,
    app_id: str = "app",
    wait: bool = True,
    extra_args: tuple[str, ...] = (),
) -> Runtime:
    """daprd standalone (no placement, scheduler or sentry) on free loopback ports."""
    binary = daprd_binary()
    http_port, grpc_port = free_port(), free_port()
    args = [
        str(binary),
        "--app-id", app_id,
        "--mode", "standalone",
        "--resources-path", str(resources),
        "--dapr-listen-addresses", "127.0.0.1",
        "--dapr-http-port", str(http_port),
        "--dapr-grpc-port", str(grpc_port),
        "--dapr-internal-grpc-port", str(free_port()),
        "--dapr-internal-grpc-listen-address", "127.0.0.1",
        "--dapr-public-port", str(free_port()),
        "--dapr-public-listen-address", "127.0.0.1",
        "--metrics-port", str(free_port()),
        "--metrics-listen-address", "127.0.0.1",
        "--dapr-graceful-shutdown-seconds", "1",
        "--log-level", "info",
        *extra_args,
    ]
    if config is not None:
        args += ["--config", str(config)]
    child = _daprd_env(socket_folder, env)
    if api_token is not None:
        child["DAPR_API_TOKEN"] = api_token
    handle = open(log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
    popen = subprocess.Popen(args, cwd=REPO, env=child, stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    runtime = Runtime("daprd", Proc(popen, log_path), http_port, grpc_port, api_token)
    if wait:
        try:
            wait_until(
                lambda: http_get(f"{runtime.base}/healthz", timeout=2)[0] == 204, "daprd health", popen, timeout=60
            )
        except AssertionError:
            runtime.stop()
            raise AssertionError(f"daprd did not become healthy; its log:\n{runtime.log()[-4000:]}") from None
    return runtime


def start_gateway(
    resources: Path,
    socket_folder: Path,
    log_path: Path,
    *,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    api_token: str | None = None,
    app_id: str = "app",
) -> Runtime:
    """`secretbridge gateway` on free loopback ports, with the same app id as `start_daprd`'s."""
    http_port, grpc_port = free_port(), free_port()
    args = [
        "gateway",
        "--app-id", app_id,
        "--resources-path", str(resources),
        "--socket-folder", str(socket_folder),
        "--http-port", str(http_port),
        "--grpc-port", str(grpc_port),
    ]
    if config is not None:
        args += ["--config", str(config)]
    child = dict(env or child_env())
    if api_token is not None:
        child["DAPR_API_TOKEN"] = api_token
    proc = start(args, log_path, env=child)
    runtime = Runtime("gateway", proc, http_port, grpc_port, api_token)
    health = f"{runtime.base}/healthz/outbound"
    wait_until(lambda: http_get(health, timeout=2)[0] == 204, "gateway health", proc.popen)
    return runtime


def start_runtime(kind: str, resources: Path, socket_folder: Path, **kwargs: object) -> Runtime:
    """daprd or the gateway, by name."""
    log_path = socket_folder / f"{kind}.log"
    if kind == "daprd":
        return start_daprd(resources, socket_folder, log_path, **kwargs)  # type: ignore[arg-type]
    return start_gateway(resources, socket_folder, log_path, **kwargs)  # type: ignore[arg-type]


def run_app(runtime: Runtime, store: str, *keys: str, metadata: dict[str, str] | None = None,
            env: dict[str, str] | None = None) -> dict:
    """examples/read_secrets.py (the real dapr SDK, and plain HTTP) against `runtime`."""
    import json

    args = [sys.executable, str(REPO / "examples" / "read_secrets.py"), "--json", store, *keys]
    for name, value in (metadata or {}).items():
        args += ["--metadata", f"{name}={value}"]
    done = subprocess.run(args, env=env or runtime.app_env(), cwd=REPO, capture_output=True, timeout=90,
                          check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return json.loads(done.stdout)


@contextlib.contextmanager
def serving(socket_folder: Path, env: dict[str, str] | None = None, *extra: str) -> Iterator[Proc]:
    """`secretbridge serve` on `socket_folder/secretbridge.sock`, ready before the runtime starts
    (daprd scans the folder once, at start)."""
    from tests.gateway_support import socket_accepts

    serve = start(["serve", "--socket-folder", str(socket_folder), "--http-port", "-1", *extra],
                  socket_folder / "serve.log", env=env)
    try:
        wait_until(lambda: socket_accepts(socket_folder / "secretbridge.sock"), "serve socket", serve.popen)
        yield serve
    finally:
        if serve.popen.poll() is None:
            serve.popen.send_signal(signal.SIGTERM)
        serve.stop()
