"""`secretbridge dev`: the newcomer's first minute (`make run`).

Starts `secretbridge serve` on a private temporary socket folder, then a Dapr runtime in front of it
on the given ports: the real daprd when `--daprd PATH` names one (`make run` finds or builds it), else
the development gateway. secretbridge starts first because daprd scans the socket folder once, at
start. It waits until both answer, says which runtime it started, and prints one `curl` line and one
Python line (the real `dapr` SDK) that read a sample secret. Ctrl-C (or SIGTERM) stops both and removes
the socket folder. Children's logs go to stderr; stdout carries only the instructions, so they stay
readable. Never prints a secret value.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import yaml

from secretbridge.core.sockets import TYPE_PREFIX
from secretbridge.gateway import NOT_DAPRD
from secretbridge.gateway.components import ResourceError, load_components

log = logging.getLogger("secretbridge.dev")

#: The file beside a daprd built by tools/daprd/get_daprd.py that says how to run it (its BUILD_INFO).
BUILD_INFO = "daprd.json"
#: Preferred sample secrets, in order; otherwise the first name the store lists.
PREFERRED_SAMPLES = ("db-password", "api-key")
STOP_GRACE_SECONDS = 10.0


@dataclass
class DevOptions:
    """What `secretbridge dev` is told."""

    resources_path: str
    http_port: int = 3500
    grpc_port: int = 50001
    config: str | None = None
    startup_timeout: float = 30.0
    #: The daprd binary to run; None: the development gateway.
    daprd: str | None = None


class DevError(RuntimeError):
    """Start-up failed; the message tells the user what to do."""


def free_port() -> int:
    """A loopback port free right now (daprd's internal, public and metrics ports)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _version_of(binary: str) -> str:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        raise DevError(f"cannot run daprd at {binary}: {exc.strerror}") from None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `host:port` can be bound right now."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def socket_names(resources_path: str) -> list[str]:
    """The socket names the resources need: `secretstores.<name>` types, lower-cased, in order."""
    names: list[str] = []
    for component in load_components([resources_path]):
        ctype = component.type.lower()
        if ctype.startswith(TYPE_PREFIX) and ctype[len(TYPE_PREFIX) :] not in names:
            names.append(ctype[len(TYPE_PREFIX) :])
    return names


def _socket_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, urllib.error.URLError):
        return 0


def _http_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read() or b"null")


def _shown_python() -> str:
    # A path relative to the working directory reads better in the printed line.
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        return str(exe.relative_to(Path.cwd()))
    return str(exe)


class DevRun:
    """The two child processes and the temporary socket folder they share."""

    def __init__(self, options: DevOptions, stopping: threading.Event | None = None) -> None:
        self.options = options
        # Set by Ctrl-C / SIGTERM: start-up gives up at once instead of waiting out its timeout.
        self.stopping = stopping or threading.Event()
        self.folder = Path(tempfile.mkdtemp(prefix="sb-dev-", dir="/tmp"))
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.daprd_version = ""

    def _spawn(self, what: str, args: list[str]) -> subprocess.Popen[bytes]:
        # Children write logs to our stderr so stdout holds only the instructions.
        popen = subprocess.Popen([sys.executable, "-m", "secretbridge", *args], stdout=sys.stderr)
        self.children.append((what, popen))
        return popen

    def _wait(self, what: str, popen: subprocess.Popen[bytes], ready: object) -> None:
        deadline = time.monotonic() + self.options.startup_timeout
        while time.monotonic() < deadline:
            if self.stopping.is_set():
                raise DevError(f"interrupted while {what} was starting")
            if popen.poll() is not None:
                raise DevError(f"{what} exited with code {popen.returncode} while starting (see its log above)")
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise DevError(f"{what} did not become ready within {self.options.startup_timeout:g}s")

    @property
    def runtime(self) -> str:
        """What stands where daprd stands, in words."""
        if self.options.daprd is None:
            return "the development gateway"
        return f"daprd {self.daprd_version}".strip()

    def start(self) -> None:
        """Start `serve` for each socket the components need, then the runtime; wait for each."""
        for name in socket_names(self.options.resources_path) or ["secretbridge"]:
            path = self.folder / f"{name}.sock"
            popen = self._spawn(
                f"secretbridge serve ({name})",
                ["serve", "--socket-folder", str(self.folder), "--name", name, "--http-port", "-1"],
            )
            self._wait(f"secretbridge serve ({name})", popen, lambda p=path: _socket_accepts(p))
        if self.options.daprd is not None:
            self._start_daprd(self.options.daprd)
        else:
            self._start_gateway()

    def _start_daprd(self, binary: str) -> None:
        self.daprd_version = _version_of(binary)
        args = [
            binary, "--app-id", "secretbridge-dev", "--resources-path", self.options.resources_path,
            "--dapr-listen-addresses", "127.0.0.1",
            "--dapr-http-port", str(self.options.http_port), "--dapr-grpc-port", str(self.options.grpc_port),
            "--dapr-internal-grpc-port", str(free_port()), "--dapr-internal-grpc-listen-address", "127.0.0.1",
            "--dapr-public-port", str(free_port()), "--dapr-public-listen-address", "127.0.0.1",
            "--metrics-port", str(free_port()), "--metrics-listen-address", "127.0.0.1",
            "--log-level", "warn",
        ]
        config = self._daprd_config(binary)
        if config:
            args += ["--config", config]
        env = dict(os.environ, DAPR_COMPONENTS_SOCKETS_FOLDER=str(self.folder))
        env.pop("DAPR_SCHEDULER_HOST_ADDRESS_DNS_A", None)  # no control plane in a laptop run
        # Its own session: a Ctrl-C in the terminal reaches only `dev`, which then stops daprd once. daprd
        # takes a second signal during its shutdown as an emergency and logs it as fatal.
        popen = subprocess.Popen(args, stdout=sys.stderr, env=env, start_new_session=True)
        self.children.append(("daprd", popen))
        health = f"http://127.0.0.1:{self.options.http_port}/v1.0/healthz"
        self._wait("daprd", popen, lambda: _http_status(health) == 204)

    def _daprd_config(self, binary: str) -> str | None:
        """The Configuration daprd runs with: the user's, plus the name resolution the binary's build asks for.

        The lean build (tools/daprd) has no mdns, standalone daprd's default resolver, and says which resolver
        to name instead in the `daprd.json` beside it; without one, daprd logs an error at every start. Other
        builds (a `dapr init` install) have mdns and no such file, and a Configuration that names a resolver
        already is the user's choice: both are left alone.
        """
        try:
            info = json.loads(Path(binary).resolve().with_name(BUILD_INFO).read_text(encoding="utf-8"))
            resolution = info["nameResolution"]
        except (OSError, ValueError, TypeError, KeyError):
            return self.options.config
        document: dict[str, object] = {
            "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "metadata": {"name": "secretbridge-dev"},
        }
        if self.options.config:
            try:
                loaded = yaml.safe_load(Path(self.options.config).read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                return self.options.config  # daprd says what is wrong with it
            if not isinstance(loaded, dict):
                return self.options.config
            document = loaded
        spec = document.setdefault("spec", {})
        if not isinstance(spec, dict) or spec.get("nameResolution"):
            return self.options.config
        spec["nameResolution"] = resolution
        # In a subfolder: daprd warns about every file in the socket folder that is not a socket.
        path = self.folder / "daprd" / "config.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return str(path)

    def _start_gateway(self) -> None:
        args = [
            "gateway",
            "--resources-path",
            self.options.resources_path,
            "--socket-folder",
            str(self.folder),
            "--http-port",
            str(self.options.http_port),
            "--grpc-port",
            str(self.options.grpc_port),
        ]
        if self.options.config:
            args += ["--config", self.options.config]
        popen = self._spawn("secretbridge gateway", args)
        health = f"http://127.0.0.1:{self.options.http_port}/v1.0/healthz/outbound"
        self._wait("secretbridge gateway", popen, lambda: _http_status(health) == 204)

    def sample(self) -> tuple[str, str | None]:
        """A store and one secret name it serves (None when it lists none)."""
        base = f"http://127.0.0.1:{self.options.http_port}/v1.0"
        meta = _http_json(f"{base}/metadata")
        components = [c["name"] for c in meta.get("components", [])] if isinstance(meta, dict) else []
        if not components:
            raise DevError(
                f"{self.runtime} loaded no secret store from {self.options.resources_path} "
                "(see the warnings above: a Component needs type secretstores.<socket name>)"
            )
        order = [c.name for c in load_components([self.options.resources_path])]
        store = min(components, key=lambda n: order.index(n) if n in order else len(order))
        try:
            bulk = _http_json(f"{base}/secrets/{store}/bulk")
            names = sorted(bulk) if isinstance(bulk, dict) else []
        except (OSError, urllib.error.URLError, ValueError):
            names = []
        preferred = [n for n in PREFERRED_SAMPLES if n in names]
        return store, (preferred or names or [None])[0]

    def instructions(self, store: str, key: str | None) -> str:
        """What to print once both processes answer."""
        http, grpc_port = self.options.http_port, self.options.grpc_port
        lines = ["", f"secretbridge is serving {self.options.resources_path} through {self.runtime}."]
        if self.options.daprd is None:
            lines += [
                f"  {NOT_DAPRD}",
                "  development gateway: no daprd found (`make daprd` builds the pinned one with Go; or set "
                "DAPRD=/path/to/daprd)",
            ]
        lines += [f"  HTTP http://localhost:{http}   gRPC localhost:{grpc_port}   socket folder {self.folder}"]
        if self.options.daprd is not None:
            lines += ["  (daprd's warnings about mTLS, actors, the scheduler and the app channel are expected: "
                      "this run has no Dapr control plane and no app)"]
        lines += [""]
        if key is None:
            lines += [
                f"The store {store!r} lists no secrets; try its bulk endpoint:",
                f"  curl http://localhost:{http}/v1.0/secrets/{store}/bulk",
            ]
        else:
            # Double-quoted Python strings keep the shell quoting of the whole line simple.
            code = (
                "from dapr.clients import DaprClient; "
                f"print(dict(DaprClient().get_secret({json.dumps(store)}, {json.dumps(key)}).secret))"
            )
            lines += [
                "Read a secret over HTTP:",
                f"  curl http://localhost:{http}/v1.0/secrets/{store}/{key}",
                "Or with the dapr SDK (gRPC):",
                f"  DAPR_HTTP_PORT={http} DAPR_GRPC_PORT={grpc_port} {shlex.quote(_shown_python())} -c "
                f"{shlex.quote(code)}",
            ]
        lines += ["", "Press Ctrl-C to stop.", ""]
        return "\n".join(lines)

    def exited(self) -> tuple[str, int] | None:
        """The first child that has exited, with its code."""
        for what, popen in self.children:
            if popen.poll() is not None:
                return what, int(popen.returncode)
        return None

    def stop(self) -> None:
        """SIGTERM the children, newest first (the runtime before the store); remove the socket folder."""
        for _what, popen in reversed(self.children):
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
                try:
                    popen.wait(STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def run(options: DevOptions) -> int:
    """Run until Ctrl-C or SIGTERM; 0 on a clean stop, 1 when something failed, 2 on bad input."""
    if not Path(options.resources_path).is_dir():
        print(f"error: resources path {options.resources_path!r} is not a folder", file=sys.stderr)
        return 2
    try:
        socket_names(options.resources_path)
    except ResourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if options.daprd is not None and not (Path(options.daprd).is_file() and os.access(options.daprd, os.X_OK)):
        print(f"error: --daprd {options.daprd!r} is not an executable file (`make daprd` prints one)", file=sys.stderr)
        return 2
    for flag, port in (("--http-port", options.http_port), ("--grpc-port", options.grpc_port)):
        if not port_is_free(port):
            print(
                f"error: port {port} on 127.0.0.1 is busy (another daprd or gateway?); "
                f"stop it or pick a free port with {flag}",
                file=sys.stderr,
            )
            return 2

    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    dev = DevRun(options, stopping)
    code = 0
    try:
        dev.start()
        store, key = dev.sample()
        print(dev.instructions(store, key), flush=True)
        while not stopping.wait(0.2):
            gone = dev.exited()
            if gone is not None:
                log.error("a child process exited; stopping", extra={"process": gone[0], "code": gone[1]})
                code = 1
                break
    except DevError as exc:
        if not stopping.is_set():
            print(f"error: {exc}", file=sys.stderr)
            code = 1
    finally:
        dev.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if code == 0:
        print("stopped; socket folder removed", file=sys.stderr, flush=True)
    return code


def add_dev_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `dev` on the main CLI's subparsers and return its parser."""
    from secretbridge.gateway.cli import add_ports

    parser = subparsers.add_parser(
        "dev",
        help="run `serve` plus daprd (or the gateway) on local components and print how to read a secret",
        description="Start `secretbridge serve` on a private socket folder, then daprd (with --daprd) or "
        "the development gateway in front of it, wait until both answer, then print a curl line and a "
        "Python line that read a sample secret. Ctrl-C stops both. Without daprd: " + NOT_DAPRD,
    )
    parser.add_argument("--resources-path", required=True, metavar="DIR", help="folder of Dapr Component YAMLs")
    parser.add_argument(
        "--daprd", metavar="PATH", default=os.environ.get("DAPRD") or None,
        help="the daprd binary to run in front of secretbridge (default $DAPRD; none: the development gateway)",
    )
    add_ports(parser)
    parser.set_defaults(func=run_dev)
    return parser


def run_dev(args: argparse.Namespace) -> int:
    """Entry point of `secretbridge dev` (what `make run` calls)."""
    return run(
        DevOptions(
            resources_path=args.resources_path,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            config=args.config,
            daprd=args.daprd,
        )
    )
