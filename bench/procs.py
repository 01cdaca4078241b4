"""Server processes: start one, wait until its socket answers, read its RSS and CPU, stop it.

Every server under test runs in a process of its own, so neither the load
generator nor the fake vault shares its GIL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.vault import REPO_ROOT

#: How long a server may take to start listening (imports included).
START_TIMEOUT = 30.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ServerProcess:
    """A running server: its label, socket, process and log file."""

    label: str
    socket: Path
    process: subprocess.Popen[bytes]
    log: Path
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int:
        """Resident set size now (VmRSS), in KiB."""
        return _status_kib(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        """The highest resident set size so far (VmHWM), in KiB."""
        return _status_kib(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far, all threads."""
        return process_cpu_seconds(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        stop_process(self.process, timeout)


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM a child, then SIGKILL it if it does not exit within `timeout`; nothing if it has exited."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])  # "VmRSS:	  51234 kB"
    raise RuntimeError(f"/proc/{pid}/status has no {field_name}")


def on_cpus(cpus: Collection[int] | None) -> Callable[[], None] | None:
    """A `preexec_fn` that keeps a child on `cpus` (None: no rule, run anywhere). Set in the child
    before exec, so every thread the process starts inherits it."""
    if cpus is None:
        return None
    placed = set(cpus)
    return lambda: os.sched_setaffinity(0, placed)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (readable by any process of the same user)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces or parentheses; the fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def wait_until_serving(socket: Path, process: subprocess.Popen[bytes], timeout: float = START_TIMEOUT) -> None:
    """Return once a gRPC channel to the socket is ready; fail if the process died first."""
    deadline = time.monotonic() + timeout
    while not socket.exists():
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before creating {socket}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no socket at {socket} after {timeout:.0f} s")
        time.sleep(0.02)
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        grpc.channel_ready_future(channel).result(timeout=max(deadline - time.monotonic(), 1.0))


def launch(
    label: str, argv: Sequence[str], socket: Path, env: Mapping[str, str], log_dir: Path
) -> ServerProcess:
    """Start `python <argv>` with its stdout and stderr in a log file; `ready()` waits for it.

    Launching several before waiting lets their imports overlap.
    """
    log = log_dir / f"{label.replace(' ', '_').replace('/', '_')}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, *argv], cwd=REPO_ROOT, env=dict(env), stdout=sink, stderr=subprocess.STDOUT
        )
    return ServerProcess(label, socket, process, log)


def ready(server: ServerProcess) -> ServerProcess:
    """Wait until a launched server answers on its socket; stop it and raise if it does not."""
    try:
        wait_until_serving(server.socket, server.process)
    except BaseException as err:
        server.stop()
        raise RuntimeError(f"{server.label} did not start: {err}\n{server.log_tail()}") from err
    return server


def secretbridge_argv(folder: Path, name: str, workers: int = 16) -> list[str]:
    """The production server, exactly as deployed but quiet and without the HTTP port."""
    return [
        "-m", "secretbridge", "--log-level", "warning", "--log-format", "json", "serve",
        "--socket-folder", str(folder), "--name", name, "--http-port", "-1", "--workers", str(workers),
    ]


def bench_server_argv(kind: str, socket: Path, workers: int | None = None) -> list[str]:
    """One of `bench.servers`' kinds."""
    argv = ["-m", "bench.servers", kind, "--socket", str(socket)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return argv
