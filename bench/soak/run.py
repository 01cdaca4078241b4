"""The soak itself: one `secretbridge serve`, its readers, daprd and an app, and the phases of faults.

Everything runs on this machine and talks over loopback or Unix sockets: the vault and identity
doubles on threads of this process (`bench.vault.VaultRig`), `secretbridge serve` and daprd as
child processes, the readers in a child process of their own (`bench.soak.callers`). Children die
with this process (PR_SET_PDEATHSIG), the readers also when their stdin closes, and every phase
has a fixed length: the soak stops by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from secretbridge.core.policy import DEFAULT_WORKERS
from secretbridge.proto.components.v1 import secretstore_pb2, secretstore_pb2_grpc

from bench import procs
from bench.daprd import free_port, http_get
from bench.soak.callers import CallerPlan, Records, plan_json, target_key
from bench.soak.faults import LocalStores, VaultFaults, value
from bench.vault import REPO_ROOT, VaultRig
from bench.workload import INSTANCE_HEADER
from tests.support import Bridge

# The phases, in the order a cycle runs them. `kill -9` runs in the first cycle only, so that the
# second half of a run is one process's life and its RSS can be judged.
STEADY = "steady"
KILL = "kill -9 + restart"
DOWN = "vault down (503)"
HUNG = "vault hung"
THROTTLED = "vault throttled (429)"
IDENTITY = "identity down"
ROTATION = "rotation during outage"
DOOM = "deleted + disabled"
LOCAL = "file rewrites + volume swaps"
WARMUP = "warm-up"
FIRST_CYCLE = (STEADY, KILL, DOWN, HUNG, THROTTLED, IDENTITY, ROTATION, DOOM, LOCAL)
CYCLE = tuple(kind for kind in FIRST_CYCLE if kind != KILL)
FAULTS = tuple(kind for kind in FIRST_CYCLE if kind != STEADY)

#: The instances the socket callers read, and the Components (the same backends) the app reads through daprd.
INSTANCES = ("keyvault", "file", "containerapps")
APP_PREFIX = "app-"
#: The secret rotated (in `steady` with the vault healthy, and in `rotation` while it is down).
ROTATED = "kv-rotated"
#: How often the rotation probe reads it.
PROBE_EVERY = 0.05
#: The codes a deleted and a disabled Key Vault secret are answered with.
DELETED_CODE = "NOT_FOUND"
DISABLED_CODE = "FAILED_PRECONDITION"
SOCKET_NAME = "secretbridge"


@dataclass(frozen=True)
class SoakSettings:
    """How long and how hard; `FULL` is `make soak`, `SMOKE` proves the harness in seconds."""

    name: str
    minutes: float = 10.0
    phase_seconds: float = 20.0
    warmup_seconds: float = 10.0
    callers: int = 64
    rate: float = 640.0  # socket reads a second, all callers together
    app_callers: int = 4
    app_rate: float = 40.0
    kv_names: int = 100
    local_names: int = 50
    cache_ttl: float = 5.0
    request_timeout: float = 5.0
    vault_latency: float = 0.01
    throttle_per_second: int = 20
    token_lifetime: int = 10  # seconds: tokens run out within an identity outage
    rewrite_every: float = 1.0
    call_timeout: float = 15.0
    workers: int = DEFAULT_WORKERS

    def total_seconds(self) -> float:
        return self.minutes * 60.0


FULL = SoakSettings("full")
SMOKE = SoakSettings(
    "smoke", minutes=0.16, phase_seconds=1.0, warmup_seconds=0.5, rate=200.0, app_callers=2, app_rate=10.0,
    kv_names=10, local_names=5, cache_ttl=1.0, request_timeout=1.0, token_lifetime=2, rewrite_every=0.3,
    call_timeout=5.0,
)


def schedule(settings: SoakSettings) -> tuple[float, list[tuple[str, int]]]:
    """(phase length, [(phase, cycle)]): whole phases after the warm-up, cycling; phases are shortened
    when the run is too short for one whole first cycle."""
    room = max(settings.total_seconds() - settings.warmup_seconds, 0.0)
    length = min(settings.phase_seconds, room / len(FIRST_CYCLE)) if room else settings.phase_seconds
    count = max(int(room // length + 1e-9), len(FIRST_CYCLE)) if length else len(FIRST_CYCLE)
    order: list[tuple[str, int]] = [(kind, 0) for kind in FIRST_CYCLE]
    cycle = 1
    while len(order) < count:
        order += [(kind, cycle) for kind in CYCLE]
        cycle += 1
    return length, order[:count]


@dataclass
class Phase:
    """One phase as it ran: when, the vault's and identity's traffic, and what happened in it."""

    kind: str
    cycle: int
    start: float
    end: float = 0.0
    vault: dict[str, int] = field(default_factory=dict)
    token_requests: int = 0
    events: dict[str, Any] = field(default_factory=dict)


def _die_with_us(argv: list[str]) -> list[str]:
    """`argv`, run so that it is killed when this process dies (the child sets PR_SET_PDEATHSIG,
    then execs): a soak killed half-way leaves no server behind."""
    shim = ("import ctypes, os, sys; ctypes.CDLL(None).prctl(1, 9); "
            "os._exit(1) if os.getppid() != int(sys.argv[1]) else os.execvp(sys.argv[2], sys.argv[2:])")
    return [sys.executable, "-c", shim, str(os.getpid()), *argv]


class Soak:
    """One run: start everything, run the phases, stop everything; `result()` is the raw material."""

    def __init__(self, settings: SoakSettings, rig: VaultRig, daprd: Path | None, progress: IO[str]) -> None:
        self.settings = settings
        self.rig = rig
        self.daprd_path = daprd
        self.progress = progress
        self.folder = rig.folder
        self.sockets = self.folder / "sockets"
        self.sockets.mkdir()
        self.socket = self.sockets / f"{SOCKET_NAME}.sock"
        self.env = rig.child_env()
        self.length, self.order = schedule(settings)
        self.faults = VaultFaults(rig.fake, rig.identity)
        self.kv_names = [f"kv-{i:04d}" for i in range(settings.kv_names)] + [ROTATED]
        self.doom_cycles = sorted({cycle for kind, cycle in self.order if kind == DOOM})
        self.local = LocalStores(self.folder, [f"file-{i:04d}" for i in range(settings.local_names)],
                                 [f"vol-{i:04d}" for i in range(settings.local_names)])
        self.server: subprocess.Popen[bytes] | None = None
        self.serve_logs: list[Path] = []
        self.daprd: subprocess.Popen[bytes] | None = None
        self.daprd_base: str | None = None
        self.daprd_skipped = "" if daprd is not None else "no daprd"
        self.callers: subprocess.Popen[str] | None = None
        self.callers_summary: dict[str, Any] = {}
        self.records = self.folder / "records"
        self.phases: list[Phase] = []
        self.doomed: dict[str, tuple[float, str]] = {}  # target -> (when, the code it must fail with)
        self.restarts: list[dict[str, float]] = []
        self.rotations: list[dict[str, Any]] = []
        self.rss: list[tuple[float, int, int, float]] = []  # serve's (when, pid, KiB, CPU seconds so far)
        self.load: list[tuple[float, float]] = []  # (when, the 1-minute load average)
        self.observed: list[tuple[float, str]] = []  # the rotation probe: (when answered, value) on change
        self.rotated_version = 0
        self.pids: list[int] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = 0.0
        self.finished = 0.0

    # ---- start and stop --------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[soak {time.monotonic() - self.started:7.1f} s] {text}", file=self.progress, flush=True)

    def _launch_serve(self) -> subprocess.Popen[bytes]:
        log = self.folder / f"serve-{len(self.serve_logs)}.log"
        self.serve_logs.append(log)
        argv = procs.secretbridge_argv(self.sockets, SOCKET_NAME, self.settings.workers)
        with log.open("wb") as sink:
            process = subprocess.Popen(_die_with_us([sys.executable, *argv]), cwd=REPO_ROOT, env=self.env,
                                       stdout=sink, stderr=subprocess.STDOUT)
        self.pids.append(process.pid)
        return process

    def _wait_for_socket(self, process: subprocess.Popen[bytes], timeout: float = procs.START_TIMEOUT) -> float:
        """When the socket first accepted a connection (a stale socket file refuses until the new server binds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"secretbridge exited with {process.returncode}:\n{self.log_tail()}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(self.socket))
                    return time.monotonic()
                except OSError:
                    pass
            time.sleep(0.005)
        raise RuntimeError(f"secretbridge's socket did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if not self.serve_logs:
            return ""
        with contextlib.suppress(OSError):
            return "\n".join(self.serve_logs[-1].read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _prime(self) -> None:
        """Init the three instances and read every name once: the load starts from a warm cache."""
        rig, settings = self.rig, self.settings
        for name in self.kv_names:
            rig.fake.set_secret(name, value(name, 0))
        for cycle in self.doom_cycles:
            for name in self._doomed_names(cycle):
                rig.fake.set_secret(name, value(name, 0))
        kv = rig.metadata(cacheTTL=f"{settings.cache_ttl:g}s", requestTimeout=f"{settings.request_timeout:g}s")
        bridge = Bridge(self.socket)
        try:
            bridge.init(kv, instance="keyvault")
            for instance, metadata in self.local.metadata().items():
                bridge.init(metadata, instance=instance)
            for instance, names in self._pool_names().items():
                for name in names:
                    bridge.get(name, instance=instance, timeout=30)
        finally:
            bridge.close()

    def _pool_names(self) -> dict[str, list[str]]:
        return {"keyvault": self.kv_names, "file": self.local.file_names, "containerapps": self.local.volume_names}

    def _pool(self) -> list[list[str]]:
        return [[instance, name] for instance, names in self._pool_names().items() for name in names]

    @staticmethod
    def _doomed_names(cycle: int) -> tuple[str, str]:
        return f"kv-deleted-{cycle}", f"kv-disabled-{cycle}"

    def _start_daprd(self) -> None:
        if self.daprd_path is None:
            return
        resources = self.folder / "resources"
        resources.mkdir()
        kv = self.rig.metadata(cacheTTL=f"{self.settings.cache_ttl:g}s",
                               requestTimeout=f"{self.settings.request_timeout:g}s")
        documents = []
        for instance, metadata in [("keyvault", kv), *self.local.metadata().items()]:
            items = "".join(f"  - name: {key}\n    value: {json.dumps(val)}\n" for key, val in metadata.items())
            documents.append(
                "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
                f"metadata:\n  name: {APP_PREFIX}{instance}\n"
                f"spec:\n  type: secretstores.{SOCKET_NAME}\n  version: v1\n  metadata:\n{items}"
            )
        (resources / "components.yaml").write_text("---\n".join(documents))
        http_port = free_port()
        env = {k: v for k, v in self.env.items() if not k.startswith("DAPR_") and k != "NAMESPACE"}
        env["DAPR_COMPONENTS_SOCKETS_FOLDER"] = str(self.sockets)
        log = self.folder / "daprd.log"
        with log.open("wb") as sink:
            self.daprd = subprocess.Popen(_die_with_us([
                str(self.daprd_path), "--app-id", "soak", "--mode", "standalone", "--resources-path", str(resources),
                "--dapr-listen-addresses", "127.0.0.1", "--dapr-http-port", str(http_port),
                "--dapr-grpc-port", str(free_port()), "--dapr-internal-grpc-port", str(free_port()),
                "--dapr-internal-grpc-listen-address", "127.0.0.1", "--dapr-public-port", str(free_port()),
                "--dapr-public-listen-address", "127.0.0.1", "--metrics-port", str(free_port()),
                "--metrics-listen-address", "127.0.0.1", "--log-level", "warn",
            ]), cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        self.pids.append(self.daprd.pid)
        base = f"http://127.0.0.1:{http_port}/v1.0"
        deadline = time.monotonic() + 90
        while _status(f"{base}/healthz") != 204:
            if self.daprd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daprd did not become healthy:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        self.daprd_base = base
        # The app reads every name once, as the socket's instances were primed: the load starts warm.
        for instance, name in self._pool():
            status, body = http_get(f"{base}/secrets/{APP_PREFIX}{instance}/{name}", timeout=60)
            if status != 200:
                raise RuntimeError(f"the app's first read of {name} through daprd answered {status}: {body[:300]!r}")

    def _start_callers(self) -> None:
        settings = self.settings
        app_pool = [[APP_PREFIX + instance, name] for instance, name in self._pool() if name != ROTATED]
        plan = CallerPlan(
            socket=str(self.socket), callers=settings.callers, rate=settings.rate, pool=self._pool(),
            records=str(self.records), max_seconds=settings.total_seconds() + 120, call_timeout=settings.call_timeout,
            app_base=self.daprd_base, app_callers=settings.app_callers if self.daprd_base else 0,
            app_rate=settings.app_rate, app_pool=app_pool,
        )
        self.callers = subprocess.Popen(
            _die_with_us([sys.executable, "-m", "bench.soak.callers"]), cwd=REPO_ROOT, env=self.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.pids.append(self.callers.pid)
        self._send(plan_json(plan))
        # Its imports take a while on a busy machine: the warm-up starts once it reads.
        assert self.callers.stdout is not None
        ready, _, _ = select.select([self.callers.stdout], [], [], procs.START_TIMEOUT)
        if not ready or not self.callers.stdout.readline():
            raise RuntimeError(f"the readers did not start within {procs.START_TIMEOUT:.0f} s")

    def _tell(self, command: dict[str, Any]) -> None:
        """A command to the readers (`callers._commands`): change the pool, or stop."""
        self._send(json.dumps(command))

    def _send(self, line: str) -> None:
        if self.callers is None or self.callers.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, OSError):  # readers gone: the soak notices when it stops them
            self.callers.stdin.write(line + "\n")
            self.callers.stdin.flush()

    def _stop_callers(self) -> None:
        if self.callers is None:
            return
        self._tell({"stop": True})
        try:
            # communicate() closes stdin: the end of input stops the readers even if the line was lost.
            out, _ = self.callers.communicate(timeout=self.settings.call_timeout + 30)
            lines = out.strip().splitlines()
            self.callers_summary = json.loads(lines[-1]) if lines else {}
        except subprocess.TimeoutExpired:
            self.callers.kill()
            self.callers.wait()

    def _background(self, target: Any) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _sample(self) -> None:
        """Once a second: serve's RSS and CPU time, and the machine's load (the context of every figure)."""
        while not self._stop.wait(1.0):
            with contextlib.suppress(OSError, ValueError):
                self.load.append((time.monotonic(), float(Path("/proc/loadavg").read_text().split()[0])))
            process = self.server
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self.rss.append((time.monotonic(), process.pid, procs._status_kib(process.pid, "VmRSS"),
                                 procs.process_cpu_seconds(process.pid)))

    def _probe_rotated(self) -> None:
        """Read the rotated secret every PROBE_EVERY s; note each change of the value served."""
        options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 250)]  # back soon after the restart, as the callers
        request = secretstore_pb2.GetSecretRequest(key=ROTATED)
        last = None
        with grpc.insecure_channel(f"unix://{self.socket}", options=options) as channel:
            stub = secretstore_pb2_grpc.SecretStoreStub(channel)
            while not self._stop.wait(PROBE_EVERY):
                try:
                    reply = stub.Get(request, metadata=[(INSTANCE_HEADER, "keyvault")], timeout=2)
                except grpc.RpcError:
                    continue
                got = reply.data.get(ROTATED, "")
                if got != last:
                    self.observed.append((time.monotonic(), got))
                    last = got

    @contextlib.contextmanager
    def running(self) -> Iterator[Soak]:
        """Everything started (serve, primed, daprd, readers, samplers); stopped and reaped on the way out."""
        self.started = time.monotonic()
        self.rig.identity.lifetime = self.settings.token_lifetime
        self.rig.fake.set_latency(self.settings.vault_latency)
        try:
            self.say("starting secretbridge serve")
            self.server = self._launch_serve()
            self._wait_for_socket(self.server)
            self._prime()
            if self.daprd_path is not None:
                self.say(f"starting daprd ({self.daprd_path.name})")
                self._start_daprd()
            self._background(self._sample)
            self._background(self._probe_rotated)
            self._start_callers()
            yield self
        finally:
            self.finished = time.monotonic()
            self._stop_callers()
            self._stop.set()
            for thread in self._threads:
                thread.join(10)
            for process in (self.daprd, self.server):
                if process is not None:
                    procs.stop_process(process)
            self.faults.clear()

    # ---- phases -----------------------------------------------------------------------------------

    def _sleep_until(self, when: float, every: float | None = None, work: Any = None) -> None:
        """Sleep until `when`; with `every`, call `work()` at that period meanwhile."""
        while True:
            now = time.monotonic()
            if now >= when:
                return
            if every is None:
                time.sleep(when - now)
                return
            time.sleep(min(every, when - now))
            if time.monotonic() < when:
                work()

    def _counters(self) -> dict[str, int]:
        """The vault's requests since the last call (and the double's log emptied: a long soak stays small)."""
        fake = self.rig.fake
        counts = {kind: fake.count(kind) for kind in ("total", "get", "list", "challenge", "throttled", "failed")}
        fake.reset_counters()
        return counts

    def run_phases(self) -> None:
        """The warm-up, then every phase of the schedule, back to back."""
        warm = Phase(WARMUP, -1, time.monotonic())
        self.say(f"warm-up ({self.settings.warmup_seconds:g} s)")
        self._counters()
        tokens = len(self.rig.identity.requests)
        self._sleep_until(warm.start + self.settings.warmup_seconds)
        warm.end = time.monotonic()
        warm.vault = self._counters()
        warm.token_requests = len(self.rig.identity.requests) - tokens
        self.phases.append(warm)
        for kind, cycle in self.order:
            self.say(f"cycle {cycle + 1}: {kind} ({self.length:.1f} s)")
            phase = Phase(kind, cycle, time.monotonic())
            tokens = len(self.rig.identity.requests)
            end = phase.start + self.length
            try:
                getattr(self, "_" + _handler(kind))(phase, end)
                self._sleep_until(end)
            finally:
                self.faults.clear()
            phase.end = time.monotonic()
            phase.vault = self._counters()
            phase.token_requests = len(self.rig.identity.requests) - tokens
            self.phases.append(phase)

    def _rotate(self) -> tuple[float, str]:
        self.rotated_version += 1
        new = value(ROTATED, self.rotated_version)
        self.rig.fake.set_secret(ROTATED, new)
        return time.monotonic(), new

    def _steady(self, phase: Phase, end: float) -> None:
        # The previous cycle's deleted and disabled names leave the pool; this cycle's join it.
        if phase.cycle - 1 in self.doom_cycles:
            self._tell({"remove": [["keyvault", name] for name in self._doomed_names(phase.cycle - 1)]})
        if phase.cycle in self.doom_cycles:
            self._tell({"add": [["keyvault", name] for name in self._doomed_names(phase.cycle)]})
        # A rotation with the vault healthy: served within cacheTTL (the baseline for the outage's).
        changed, new = self._rotate()
        self.rotations.append({"cycle": phase.cycle, "kind": "healthy vault", "from": changed, "value": new})

    def _kill(self, phase: Phase, end: float) -> None:
        self._sleep_until(phase.start + self.length / 4)
        assert self.server is not None
        killed = time.monotonic()
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()
        # Restarted at once, as a supervisor (the kubelet, Container Apps) does; same socket folder.
        self.server = self._launch_serve()
        back = self._wait_for_socket(self.server)
        self.restarts.append({"killed": killed, "back": back})
        phase.events.update(killed=killed, back=back, down_s=back - killed)
        self.say(f"killed -9 and restarted: the socket answered again after {back - killed:.2f} s")

    def _down(self, phase: Phase, end: float) -> None:
        self.faults.down()

    def _hung(self, phase: Phase, end: float) -> None:
        self.faults.hang()
        self._sleep_until(end - 0.05)
        phase.events["held_when_released"] = self.rig.fake.held

    def _throttled(self, phase: Phase, end: float) -> None:
        self.faults.throttle(self.settings.throttle_per_second)

    def _identity(self, phase: Phase, end: float) -> None:
        self.faults.identity_down()

    def _rotation(self, phase: Phase, end: float) -> None:
        # Down for the first half; the secret rotates a quarter in; the vault comes back at half time.
        self.faults.down()
        self._sleep_until(phase.start + self.length / 4)
        changed, new = self._rotate()
        self._sleep_until(phase.start + self.length / 2)
        self.faults.up()
        back = time.monotonic()
        self.rotations.append({"cycle": phase.cycle, "kind": "after the vault came back", "from": back,
                               "changed": changed, "value": new})

    def _doom(self, phase: Phase, end: float) -> None:
        deleted, disabled = self._doomed_names(phase.cycle)
        self.rig.fake.delete(deleted)
        self.doomed[target_key("keyvault", deleted)] = (time.monotonic(), DELETED_CODE)
        self.rig.fake.disable(disabled)
        self.doomed[target_key("keyvault", disabled)] = (time.monotonic(), DISABLED_CODE)

    def _local(self, phase: Phase, end: float) -> None:
        turn = 0

        def rewrite() -> None:
            nonlocal turn
            turn += 1
            # Every third file write in place (truncate and write): a reader may catch it half-written.
            self.local.rewrite_file(in_place=turn % 3 == 0)
            self.local.swap_volume()

        rewrite()
        self._sleep_until(end, every=self.settings.rewrite_every, work=rewrite)
        phase.events.update(file_version=self.local.file_version, volume_version=self.local.volume_version,
                            in_place_writes=self.local.in_place_writes)

    # ---- what it found -----------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """The raw material for the analysis (times are time.monotonic(), as the readers' are)."""
        for rotation in self.rotations:
            seen = next((at for at, got in self.observed if at >= rotation["from"] and got == rotation["value"]), None)
            rotation["served_after_s"] = None if seen is None else seen - rotation["from"]
        return {
            "settings": asdict(self.settings),
            "phase_seconds": self.length,
            "phases": [asdict(phase) for phase in self.phases],
            "doomed": {key: list(entry) for key, entry in self.doomed.items()},
            "restarts": self.restarts,
            "rotations": self.rotations,
            "rss": self.rss,
            "rotated_served": self.observed,
            "load": self.load,
            "daprd": str(self.daprd_path) if self.daprd_path else None,
            "daprd_skipped": self.daprd_skipped,
            "app_through_daprd": self.daprd_base is not None,
            "callers": self.callers_summary,
            "pids": self.pids,
            "folder": str(self.folder),
            "started": self.started,
            "finished": self.finished,
            "vault_prioritised": self.rig.prioritised,
        }


def _status(url: str) -> int:
    try:
        return http_get(url, timeout=2)[0]
    except OSError:
        return 0  # not listening yet


def _handler(kind: str) -> str:
    return {STEADY: "steady", KILL: "kill", DOWN: "down", HUNG: "hung", THROTTLED: "throttled",
            IDENTITY: "identity", ROTATION: "rotation", DOOM: "doom", LOCAL: "local"}[kind]


def run(settings: SoakSettings, daprd: Path | None, why: str = "", progress: IO[str] = sys.stderr) -> dict[str, Any]:
    """One whole soak; returns the raw result with the readers' records analysed (see `analysis`)."""
    with VaultRig() as rig:
        soak = Soak(settings, rig, daprd, progress)
        soak.daprd_skipped = "" if daprd is not None else (why or "no daprd")
        try:
            with soak.running():
                soak.run_phases()
        except BaseException:
            tail = soak.log_tail()
            if tail:
                print(f"secretbridge's log (last lines):\n{tail}", file=progress)
            raise
        # Imported here: analysis reads the phase names from this module.
        from bench.soak import analysis

        return analysis.analyse(soak.result(), Records.load(soak.records))

