"""The four measurements of issue 5 item 8, each against the Key Vault test double.

(a) `cached_get`: cached Get latency and throughput at 1, 16 and 64 calls in
    flight, next to bare echo servers on the same kind of socket, for both
    serving models (production threaded server, and the grpc.aio variant).
(b) `bulk_get`: BulkGet of 1,000 secrets from a cold cache against a vault that
    takes 20 ms per request, as a speed-up over reading them one by one.
(c) `hot_reads`: how many vault reads 1,000 app reads of 100 hot secrets cost.
(d) `memory`: the RSS of `secretbridge serve` idle, and holding 10,000 secrets.
(e) `bulkhead`: the p99 of Gets on a file instance while a keyvault instance's vault takes 3 s
    and 48 misses wait on it, against the same p99 with nothing else going on.
(j) `handler`: the servicer's Get in this process on primed instances, µs per call, beside the echo's.

Each returns a JSON-able dict; `report` turns them into the table and verdicts.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import grpc
from secretbridge.backends.keyvault import KEYVAULT_PROPERTIES
from secretbridge.core.policy import DEFAULT_WORKERS, OperatorPolicy
from secretbridge.proto.components.v1 import secretstore_pb2
from secretbridge.runtime.workers import RUNNING_WORKERS

from bench import daprd, procs, profile, wrk
from bench.load import LoadJob, run_in_subprocess
from bench.procs import ServerProcess
from bench.vault import VaultRig
from bench.workload import INSTANCE, INSTANCE_HEADER, hot_names, secret_name, secret_value
from tests.fakes import IDENTITY_ENV_VARS, FakeKeyVault, TestCertificates
from tests.support import Bridge

#: Key Vault's largest page: BulkGet lists this many names per request.
LIST_PAGE = 25
#: The production server is measured as it ships: `serve` with its default worker count.
PRODUCTION_WORKERS = DEFAULT_WORKERS
#: keyvault's default bulkConcurrency (its declared property default).
DEFAULT_BULK_CONCURRENCY: int = next(p.default for p in KEYVAULT_PROPERTIES if p.name == "bulkConcurrency")


@dataclass(frozen=True)
class Settings:
    """How big and how long; `FULL` is `make bench`, `SMOKE` only proves the harness works."""

    name: str
    levels: tuple[int, ...] = (1, 16, 64)
    # Short runs, many rounds: this machine's noise comes and goes within seconds, so (a) pairs
    # each round with the same round's echo and takes the median over many of them (see _level).
    # Ten of 0.6 s rather than six of 1 s: a run's p50 at 1 in flight varies by 0.7-1.6x from
    # run to run on a 2-vCPU VM, and the median of ten such ratios strays less than that of six.
    seconds: float = 0.6
    rounds: int = 10
    max_calls: int = 40_000
    warmup_seconds: float = 0.25
    warmup_calls: int = 2_000
    hot: int = 100
    latency: float = 0.02
    bulk_secrets: int = 1_000
    bulk_concurrency: tuple[int, ...] = (16, 32, 64)
    bulk_repeats: int = 2
    reads: int = 1_000
    reads_inflight: int = 16
    rss_secrets: int = 10_000
    rss_prime_inflight: int = 48  # below one instance's share of 64 workers (56)
    slow_latency: float = 3.0
    slow_misses: int = 48
    fleet_replicas: int = 4
    fleet_cold: int = 100
    fleet_ttl: str = "5s"
    fleet_period: float = 2.0
    fleet_seconds: float = 20.0
    fleet_rotate_every: float = 5.0
    limit_instances: int = 4
    limit_processes: int = 2
    limit_requests: int = 800
    limit_window: float = 2.0
    side_secrets: int = 1_000
    # (i): wrk counts whole seconds. Measured between two runs of the echo, a store's ratio to it
    # moves by about ±0.05-0.14 from one round to the next on the 2-vCPU VM; the median of thirty by
    # ±0.01-0.03 from run to run (five full runs), against ±0.02-0.03 for twenty, where one cell of 45
    # came out 0.001 under the target. Without the pool echo (see POOL_ECHO) thirty rounds take
    # a fifth longer than twenty did (docs/benchmarks.md).
    through_seconds: int = 1
    through_rounds: int = 30
    through_warmup: bool = True
    # py-spy on the echo and on secretbridge, each under 16 in flight for this long (0: not profiled).
    through_profile_seconds: int = 6
    # (j): calls per timed run of the servicer's Get in-process, and runs (the fastest counts).
    handler_calls: int = 20_000
    handler_runs: int = 10


FULL = Settings("full")
SMOKE = Settings(
    "smoke", seconds=0.5, rounds=1, max_calls=100, warmup_seconds=0.2, warmup_calls=20, hot=5, latency=0.0,
    bulk_secrets=30, bulk_repeats=1, reads=100, rss_secrets=50, slow_latency=0.5, slow_misses=8,
    fleet_replicas=2, fleet_cold=5, fleet_ttl="1s", fleet_period=0.5, fleet_seconds=2.0, fleet_rotate_every=0.5,
    limit_instances=2, limit_processes=1, limit_requests=30, limit_window=0.3, side_secrets=20,
    through_rounds=1, through_warmup=False, through_profile_seconds=0, handler_calls=200, handler_runs=1,
)


@dataclass
class ServerSpec:
    """A server under test in (a): what it is, and how to start it."""

    label: str
    kind: str  # "echo" or "bridge"
    model: str  # "aio" or "threaded"
    argv: list[str]
    socket: Path
    workers: int | None = None


@dataclass
class Context:
    """What every scenario shares: the fakes, a folder for sockets and logs, the child environment."""

    rig: VaultRig
    folder: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    @contextlib.contextmanager
    def open(cls) -> Iterator[Context]:
        with VaultRig() as rig:
            yield cls(rig, rig.folder, rig.child_env())


@contextlib.contextmanager
def _running(ctx: Context, specs: list[ServerSpec]) -> Iterator[list[ServerProcess]]:
    launched: list[ServerProcess] = []
    try:
        for spec in specs:
            launched.append(procs.launch(spec.label, spec.argv, spec.socket, ctx.env, ctx.folder))
        for server in launched:
            procs.ready(server)
        yield launched
    finally:
        for server in launched:
            server.stop()


def _production(ctx: Context, name: str, workers: int = PRODUCTION_WORKERS) -> ServerSpec:
    return ServerSpec(
        f"secretbridge threaded ({workers} workers)", "bridge", "threaded",
        procs.secretbridge_argv(ctx.folder, name, workers), ctx.folder / f"{name}.sock", workers,
    )


def _bench_server(ctx: Context, label: str, kind: str, model: str, name: str, workers: int | None = None) -> ServerSpec:
    socket = ctx.folder / f"{name}.sock"
    return ServerSpec(
        label, "bridge" if kind.startswith("bridge") else "echo", model,
        procs.bench_server_argv(kind, socket, workers), socket, workers,
    )


# ---- (a) cached Get -----------------------------------------------------------------------------


#: The local backends served by the production server beside its cached keyvault instance in (a):
#: (label, instance name), each answering the same hot names with the same values.
LOCAL_GETS = (
    (f"secretbridge file ({PRODUCTION_WORKERS} workers)", "bench-file"),
    (f"secretbridge containerapps ({PRODUCTION_WORKERS} workers)", "bench-containerapps"),
)


def local_metadata(folder: Path, names: list[str]) -> dict[str, dict[str, str]]:
    """A secrets file and an atomic-writer volume (as Container Apps mounts one) holding `names`."""
    secrets_file = folder / "bench-secrets.json"
    secrets_file.write_text(json.dumps({name: secret_value(name) for name in names}))
    volume = folder / "bench-volume"
    data = volume / "..2026_01_01_00_00_00.000000000"
    data.mkdir(parents=True, exist_ok=True)
    for name in names:
        (data / name).write_text(secret_value(name))
        link = volume / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)
    if not (volume / "..data").is_symlink():
        (volume / "..data").symlink_to(data.name)
    return {
        "bench-file": {"backend": "file", "secretsFile": str(secrets_file)},
        "bench-containerapps": {"backend": "containerapps", "secretsPath": str(volume),
                                "resolveKeyVaultReferences": "false"},
    }


def cached_get(ctx: Context, settings: Settings) -> dict[str, object]:
    """Cached-Get latency and throughput beside the bare echo servers, per in-flight level."""
    rig = ctx.rig
    rig.clear()
    names = hot_names(settings.hot)
    rig.preload(names)
    rig.fake.set_latency(settings.latency)
    locals_ = local_metadata(ctx.folder, names)
    specs = [
        _bench_server(ctx, "echo aio", "echo-aio", "aio", "echo-aio"),
        _bench_server(ctx, "echo threaded (4 workers)", "echo-threaded", "threaded", "echo-t4", 4),
        _bench_server(ctx, "echo threaded (16 workers)", "echo-threaded", "threaded", "echo-t16", 16),
        _production(ctx, "bridge-prod"),
        _production(ctx, "bridge-t4", 4),
        _bench_server(ctx, "secretbridge aio (bench variant)", "bridge-aio", "aio", "bridge-aio"),
    ]
    production = specs[3]
    by_label = {spec.label: spec for spec in specs}
    for label, _ in LOCAL_GETS:
        by_label[label] = ServerSpec(
            label, "bridge", "threaded", production.argv, production.socket, PRODUCTION_WORKERS
        )
    measured: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with _running(ctx, specs) as servers:
        for server in servers:
            if by_label[server.label].kind == "bridge":
                # A TTL longer than the section: no refresh-ahead read lands in the measured load.
                _prime(server.socket, rig.metadata(cacheTTL="1h"), names)
            if server.label == production.label:
                for instance, metadata in locals_.items():
                    _prime(server.socket, metadata, names, instance=instance)
        rig.fake.reset_counters()
        # (label, server, instance): the production server is measured once per backend.
        targets = [(server.label, server, INSTANCE) for server in servers]
        targets += [(label, s, instance) for s in servers if s.label == production.label
                    for label, instance in LOCAL_GETS]
        for round_ in range(settings.rounds):
            # A different order each round (seeded: every run alike), so that a noisy stretch of a
            # few seconds does not always fall on the same neighbours.
            order = list(targets)
            random.Random(round_).shuffle(order)
            for inflight in settings.levels:
                jobs = [
                    LoadJob(
                        label=label, socket=str(server.socket), inflight=inflight, keys=names,
                        max_calls=settings.max_calls, max_seconds=settings.seconds,
                        warmup_calls=settings.warmup_calls, warmup_seconds=settings.warmup_seconds,
                        instance=instance, server_pid=server.pid,
                    )
                    for label, server, instance in order
                ]
                for result in run_in_subprocess(jobs, ctx.env):
                    measured.setdefault((result.label, inflight), []).append(asdict(result))
        vault_reads_during_load = rig.fake.count("get")
    levels = [_level(inflight, [measured[(label, inflight)] for label in by_label], by_label)
              for inflight in settings.levels]
    return {
        "hot_secrets": settings.hot,
        "seconds_per_run": settings.seconds,
        "max_calls_per_run": settings.max_calls,
        "rounds": settings.rounds,
        "vault_latency_s": settings.latency,
        "vault_reads_during_load": vault_reads_during_load,
        "production": production.label,
        "local_gets": [label for label, _ in LOCAL_GETS],
        "levels": levels,
    }


def _level(inflight: int, per_server: list[list[dict[str, Any]]], by_label: dict[str, ServerSpec]) -> dict[str, Any]:
    """One in-flight level: each server's best round, and its ratios to the fastest bare echo round by round.

    The row shows the best round (noise only ever slows a run down). The fastest echo is the echo
    server with the highest median throughput (for p50, the lowest median p50) at this level; each
    round is paired with that echo's run of the same round (seconds apart, on the same machine's
    mood) and the ratio is the median over the rounds. Taking the best of each server's N runs
    against the best of the echoes' 3N runs, or each round's fastest of three echoes, would set
    one draw against the best of several and favour the echo more the more echoes and rounds.
    """
    results = []
    for rounds in per_server:
        best = dict(max(rounds, key=lambda r: r["throughput"]))
        spec = by_label[best["label"]]
        best.update(kind=spec.kind, model=spec.model, workers=spec.workers,
                    every_round=[round(r["throughput"], 1) for r in rounds], rounds=rounds)
        results.append(best)
    count = min(len(r["rounds"]) for r in results)
    echoes = [r for r in results if r["kind"] == "echo"]
    ceiling = max(echoes, key=lambda r: statistics.median(x["throughput"] for x in r["rounds"]))
    quickest = min(echoes, key=lambda r: statistics.median(x["p50_ms"] for x in r["rounds"]))
    fastest = [x["throughput"] for x in ceiling["rounds"]]
    lowest = [x["p50_ms"] for x in quickest["rounds"]]
    for result in results:
        own = result.pop("rounds")
        result["ratio_rounds"] = [own[i]["throughput"] / fastest[i] if fastest[i] else 0.0 for i in range(count)]
        result["p50_ratio_rounds"] = [own[i]["p50_ms"] / lowest[i] if lowest[i] else 0.0 for i in range(count)]
        result["ratio_to_ceiling"] = statistics.median(result["ratio_rounds"])
        result["p50_to_ceiling"] = statistics.median(result["p50_ratio_rounds"])
    return {
        "inflight": inflight,
        "ceiling": ceiling["label"],
        "ceiling_throughput": ceiling["throughput"],
        "p50_ceiling": quickest["label"],
        "results": results,
    }


def _prime(socket: Path, metadata: dict[str, str], names: list[str], instance: str = INSTANCE) -> None:
    """Init the instance and read every hot secret once, so the load sees only cache hits."""
    bridge = Bridge(socket)
    try:
        bridge.init(metadata, instance=instance)
        for name in names:
            bridge.get(name, instance=instance)
    finally:
        bridge.close()


class _CpuMeter:
    """Wall time, and the CPU the server and this process (the fake vault's home) spent meanwhile.

    Says which side a slow scenario was waiting on: the server, the test double, or neither (latency).
    """

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.wall = time.perf_counter()
        self.server_cpu = server.cpu_seconds()
        self.own_cpu = time.process_time()

    def read(self) -> tuple[float, float, float]:
        return (
            time.perf_counter() - self.wall,
            self.server.cpu_seconds() - self.server_cpu,
            time.process_time() - self.own_cpu,
        )


# ---- (b) BulkGet ---------------------------------------------------------------------------------


def bulk_model_seconds(secrets: int, concurrency: int, latency: float) -> float:
    """What BulkGet costs with no CPU at all: each read starts once its page is in, `concurrency` at a time.

    The later of: every page in turn and then the last page's reads (the listing is the chain),
    or the first page and then every read `concurrency` at a time (the reads are the chain).
    """
    pages = math.ceil(secrets / LIST_PAGE)
    listing_bound = pages + math.ceil(min(LIST_PAGE, secrets) / concurrency)
    reading_bound = 1 + math.ceil(secrets / concurrency)
    return max(listing_bound, reading_bound) * latency


def bulk_get(ctx: Context, settings: Settings) -> dict[str, object]:
    """Wall time of a cold BulkGet of every secret, against the one-at-a-time lower bound."""
    rig = ctx.rig
    rig.clear()
    rig.preload(secret_name("bulk", i) for i in range(settings.bulk_secrets))
    rig.fake.set_latency(settings.latency)
    sequential = settings.bulk_secrets * settings.latency
    runs: list[dict[str, object]] = []
    with _running(ctx, [_production(ctx, "bridge-bulk")]) as (server,):
        bridge = Bridge(server.socket)
        try:
            for concurrency in settings.bulk_concurrency:
                for repeat in range(settings.bulk_repeats):
                    # A fresh instance is a cold cache (and a fresh connection pool, as after a restart).
                    instance = f"bulk-{concurrency}-{repeat}"
                    bridge.init(rig.metadata(bulkConcurrency=str(concurrency)), instance=instance)
                    rig.fake.reset_counters()
                    cpu = _CpuMeter(server)
                    called_at = time.monotonic()
                    got = bridge.bulk_get(instance=instance, timeout=120)
                    wall, server_cpu, vault_cpu = cpu.read()
                    phases = _bulk_phases(rig.fake.arrivals, called_at, settings.latency)
                    # The same BulkGet again within the TTL: what an app that re-reads pays.
                    warm_started = time.perf_counter()
                    warm = bridge.bulk_get(instance=instance, timeout=120)
                    warm_wall = time.perf_counter() - warm_started
                    runs.append({
                        "bulkConcurrency": concurrency,
                        "default": concurrency == DEFAULT_BULK_CONCURRENCY,
                        "repeat": repeat,
                        "secrets": len(got),
                        "wall_s": wall,
                        "warm_s": warm_wall if len(warm) == len(got) else None,
                        "speedup": sequential / wall if wall > 0 else 0.0,
                        "model_s": bulk_model_seconds(settings.bulk_secrets, concurrency, settings.latency),
                        "vault_gets": rig.fake.count("get"),
                        "vault_lists": rig.fake.count("list"),
                        "vault_max_in_flight": rig.fake.max_in_flight,
                        "server_cpu_s": server_cpu,
                        "vault_cpu_s": vault_cpu,
                        "server_rss_kib": server.rss_kib(),
                        **phases,
                    })
        finally:
            bridge.close()
    return {
        "secrets": settings.bulk_secrets,
        "vault_latency_s": settings.latency,
        "sequential_s": sequential,
        "vault_prioritised": rig.prioritised,
        "runs": runs,
    }


def _bulk_phases(arrivals: list[tuple[float, str]], called_at: float, latency: float) -> dict[str, float]:
    """Where a BulkGet's time went, from when the fake saw each request arrive.

    `first_request_s`: from the call to the first vault request (gRPC, the cache, the token);
    `listing_s`: from there to the last page's answer (the chain of pages, each sent once the
    previous one is in); `page_turn_ms`: the mean time between pages beyond the vault's latency
    (the CPU and queueing each turn waits on); `tail_s`: from the last page to the last read's
    answer.
    """
    if not arrivals:
        return {}
    first = arrivals[0][0]
    pages = [at for at, kind in arrivals if kind == "list"]
    reads = [at for at, kind in arrivals if kind == "read"]
    last_page_done = (pages[-1] if pages else first) + latency
    last_read_done = (reads[-1] if reads else first) + latency
    gaps = [b - a for a, b in itertools.pairwise(pages)]
    return {
        "first_request_s": first - called_at,
        "listing_s": last_page_done - first,
        "page_turn_ms": (sum(gaps) / len(gaps) - latency) * 1e3 if gaps else 0.0,
        "tail_s": max(last_read_done - last_page_done, 0.0),
    }


# ---- (c) hot reads -------------------------------------------------------------------------------


def hot_reads(ctx: Context, settings: Settings) -> dict[str, object]:
    """Vault reads caused by `reads` app reads spread over `hot` secrets, with a cold cache."""
    rig = ctx.rig
    rig.clear()
    names = hot_names(settings.hot)
    rig.preload(names)
    rig.fake.set_latency(settings.latency)
    # Every hot secret read equally often, in an order an app might produce; fixed seed: repeatable.
    order = [names[i % len(names)] for i in range(settings.reads)]
    random.Random(5).shuffle(order)
    # The default worker count: with 16, one instance's share (14) is below 16 cold misses in flight.
    with _running(ctx, [_production(ctx, "bridge-hot")]) as (server,):
        bridge = Bridge(server.socket)
        try:
            bridge.init(rig.metadata(), instance=INSTANCE)
        finally:
            bridge.close()
        rig.fake.reset_counters()
        job = LoadJob(
            label=server.label, socket=str(server.socket), inflight=settings.reads_inflight, keys=order,
            max_calls=settings.reads, max_seconds=60.0, instance=INSTANCE, server_pid=server.pid,
        )
        (result,) = run_in_subprocess([job], ctx.env)
    vault_reads = rig.fake.count("get")
    return {
        "reads": settings.reads,
        "hot_secrets": settings.hot,
        "inflight": settings.reads_inflight,
        "ttl": rig.metadata()["cacheTTL"],
        "vault_latency_s": settings.latency,
        "app_reads_ok": result.calls,
        "errors": result.errors,
        "seconds": result.seconds,
        "vault_reads": vault_reads,
        "vault_requests_total": rig.fake.count("total"),
        "vault_reads_per_hot_secret": vault_reads / settings.hot if settings.hot else 0.0,
        "without_cache": settings.reads,
    }


# ---- (d) memory ----------------------------------------------------------------------------------


def memory(ctx: Context, settings: Settings) -> dict[str, object]:
    """RSS of `secretbridge serve`: idle, after a keyvault Init, and holding `rss_secrets` secrets.

    Primed two ways, each in a fresh process: one Get per secret (as apps read them), and one
    BulkGet of them all (which leaves more behind: the big reply and the SDK's page objects
    are freed into the allocator, not given back to the OS). The target is judged on the larger.
    """
    rig = ctx.rig
    rig.clear()
    names = [secret_name("mem", i) for i in range(settings.rss_secrets)]
    rig.preload(names)
    runs = [_memory_once(ctx, settings, names, how) for how in ("get", "bulk")]
    return {
        "secrets": settings.rss_secrets,
        "runs": runs,
        "primed_mb": max(run["primed_mb"] for run in runs),
        "idle_mb": min(run["idle_mb"] for run in runs),
        "ok": all(run["ok"] for run in runs),
    }


def _memory_once(ctx: Context, settings: Settings, names: list[str], how: str) -> dict[str, Any]:
    rig = ctx.rig
    # The production default of 64 workers: priming keeps rss_prime_inflight misses in flight, within
    # what the bulkhead lets one instance hold (a 16-worker server would refuse most of them).
    with _running(ctx, [_production(ctx, f"bridge-mem-{how}")]) as (server,):
        time.sleep(0.5)  # let start-up settle (lazy imports, thread stacks touched)
        idle = server.rss_kib()
        bridge = Bridge(server.socket)
        try:
            # A long requestTimeout: a BulkGet of 10,000 is one backend call, bounded by 10 of them.
            bridge.init(rig.metadata(requestTimeout="30s", bulkConcurrency="64"), instance=INSTANCE)
            after_init = server.rss_kib()
            cpu = _CpuMeter(server)
            if how == "bulk":
                primed_ok = len(bridge.bulk_get(instance=INSTANCE, timeout=300))
                errors: dict[str, int] = {}
            else:
                job = LoadJob(
                    label="prime", socket=str(server.socket), inflight=settings.rss_prime_inflight, keys=names,
                    max_calls=len(names), max_seconds=240.0, instance=INSTANCE,
                )
                (result,) = run_in_subprocess([job], ctx.env)
                primed_ok, errors = result.calls, result.errors
            seconds, server_cpu, vault_cpu = cpu.read()
            # One more Get proves the entries are served from the cache, not read again.
            rig.fake.reset_counters()
            bridge.get(names[-1], instance=INSTANCE)
            served_from_cache = rig.fake.count("get") == 0
        finally:
            bridge.close()
        time.sleep(0.5)
        primed = server.rss_kib()
        peak = server.peak_rss_kib()
    return {
        "primed_by": how,
        "primed_ok": primed_ok,
        "errors": errors,
        "inflight": settings.rss_prime_inflight if how == "get" else 64,
        "seconds": seconds,
        "server_cpu_s": server_cpu,
        "vault_cpu_s": vault_cpu,
        "served_from_cache": served_from_cache,
        "ok": served_from_cache and primed_ok == len(names),
        "idle_mb": idle * 1024 / 1e6,
        "after_init_mb": after_init * 1024 / 1e6,
        "primed_mb": primed * 1024 / 1e6,
        "peak_mb": peak * 1024 / 1e6,
        "per_secret_bytes": (primed - after_init) * 1024 / len(names) if names else 0.0,
    }


# ---- (e) bulkhead -------------------------------------------------------------------------------


def bulkhead(ctx: Context, settings: Settings) -> dict[str, object]:
    """Gets on a file instance, alone and while a keyvault instance has `slow_misses` calls waiting
    on a vault that takes `slow_latency` s: the p99s and their ratio (1.0: no interference)."""
    rig = ctx.rig
    rig.clear()
    rig.fake.set_latency(0.0)
    secrets = ctx.folder / "bulkhead-secrets.json"
    secrets.write_text('{"db-password": "fast"}')
    with _running(ctx, [_production(ctx, "bridge-bulkhead")]) as (server,):
        bridge = Bridge(server.socket)
        try:
            bridge.init(rig.metadata(requestTimeout="60s", negativeCacheTTL="0"), instance="slow")
            bridge.init({"backend": "file", "secretsFile": str(secrets)}, instance="fast")
        finally:
            bridge.close()

        def fast_job(label: str) -> LoadJob:
            return LoadJob(
                label=label, socket=str(server.socket), inflight=4, keys=["db-password"],
                max_calls=settings.max_calls, max_seconds=settings.seconds,
                warmup_calls=settings.warmup_calls, warmup_seconds=settings.warmup_seconds, instance="fast",
            )

        (alone,) = run_in_subprocess([fast_job("fast instance alone")], ctx.env)
        rig.fake.set_latency(settings.slow_latency)
        stop = threading.Event()
        outcomes: Counter[str] = Counter()

        def keep_missing(worker: int) -> None:
            # Always a name never read before: every call is a miss that waits the whole latency.
            client = Bridge(server.socket)
            n = 0
            try:
                while not stop.is_set():
                    n += 1
                    try:
                        client.get(f"cold-{worker}-{n}", instance="slow", timeout=120)
                        outcomes["OK"] += 1
                    except grpc.RpcError as err:
                        outcomes[err.code().name] += 1
            finally:
                client.close()

        threads = [threading.Thread(target=keep_missing, args=(w,), daemon=True) for w in range(settings.slow_misses)]
        for thread in threads:
            thread.start()
        time.sleep(min(1.0, settings.slow_latency / 2))  # every miss is out and waiting
        try:
            (loaded,) = run_in_subprocess([fast_job("fast instance, slow one saturated")], ctx.env)
        finally:
            stop.set()
            rig.fake.set_latency(0.0)
            for thread in threads:
                thread.join(settings.slow_latency + 30)
    return {
        "slow_latency_s": settings.slow_latency,
        "slow_misses": settings.slow_misses,
        "workers": PRODUCTION_WORKERS,
        "alone": asdict(alone),
        "loaded": asdict(loaded),
        "p99_ratio": loaded.p99_ms / alone.p99_ms if alone.p99_ms else 0.0,
        "slow_outcomes": dict(outcomes),
    }


# ---- (f) fleet: vault requests per replica ------------------------------------------------------

#: The three ways a replica can read: (label, extra metadata).
FLEET_MODES = (
    ("no cache (the built-in store's behaviour)", {"cacheTTL": "0", "negativeCacheTTL": "0"}),
    ("TTL cache", {"changeDetection": "false"}),
    ("TTL cache + change detection", {}),
)


def _paced_reads(socket: Path, instance: str, names: list[str], period: float, seconds: float,
                 stop: threading.Event, counts: dict[str, int]) -> None:
    """Read every name once per `period` seconds, evenly spread, until `seconds` pass (one replica's app)."""
    bridge = Bridge(socket)
    gap = period / len(names)
    started = time.monotonic()
    try:
        i = 0
        while not stop.is_set():
            due = started + i * gap
            now = time.monotonic()
            if now - started >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            try:
                bridge.get(names[i % len(names)], instance=instance, timeout=30)
                counts["ok"] += 1
            except grpc.RpcError:
                counts["errors"] += 1
            i += 1
    finally:
        bridge.close()


def fleet(ctx: Context, settings: Settings) -> dict[str, object]:
    """Vault requests per 10 s per replica: R instances (each one replica's cache) on one vault, reading
    their hot secrets steadily for a fixed time, while a few secrets rotate."""
    rig = ctx.rig
    rig.clear()
    names = hot_names(settings.hot)
    others = [secret_name("cold", i) for i in range(settings.fleet_cold)]
    rig.preload([*names, *others])
    ttl = settings.fleet_ttl
    modes: list[dict[str, object]] = []
    with _running(ctx, [_production(ctx, "bridge-fleet")]) as (server,):
        for label, extra in FLEET_MODES:
            instances = [f"fleet-{len(modes)}-{r}" for r in range(settings.fleet_replicas)]
            bridge = Bridge(server.socket)
            try:
                for instance in instances:
                    bridge.init(rig.metadata(**{"cacheTTL": ttl, **extra}), instance=instance)
            finally:
                bridge.close()
            time.sleep(0.3)  # the readiness probes of Init are not part of the measurement
            rig.fake.reset_counters()
            stop = threading.Event()
            counts = [{"ok": 0, "errors": 0} for _ in instances]
            threads = [
                threading.Thread(target=_paced_reads, args=(server.socket, instance, names, settings.fleet_period,
                                                            settings.fleet_seconds, stop, count))
                for instance, count in zip(instances, counts, strict=True)
            ]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            # The first pass reads every hot secret cold, whatever the mode: the steady state is
            # measured from the end of it.
            time.sleep(settings.fleet_period + 0.5)
            before = {kind: rig.fake.count(kind) for kind in ("total", "challenge", "get", "list")}
            reads_before = sum(c["ok"] for c in counts)
            measured_from = time.monotonic()
            rotations = 0
            # A few secrets rotate meanwhile: change detection must still see them.
            while any(t.is_alive() for t in threads):
                threads[0].join(settings.fleet_rotate_every)
                if time.monotonic() - started < settings.fleet_seconds - 1:
                    rig.fake.set_secret(names[rotations % len(names)], f"rotated-{rotations}")
                    rotations += 1
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - measured_from
            delta = {kind: rig.fake.count(kind) - before[kind] for kind in before}
            total = delta["total"] - delta["challenge"]
            reads = sum(c["ok"] for c in counts) - reads_before
            modes.append({
                "mode": label,
                "seconds": elapsed,
                "app_reads": reads,
                "app_reads_total": sum(c["ok"] for c in counts),
                "errors": sum(c["errors"] for c in counts),
                "vault_requests": total,
                "vault_gets": delta["get"],
                "vault_list_pages": delta["list"],
                "rotations": rotations,
                "per_replica_per_10s": total / settings.fleet_replicas / elapsed * 10 if elapsed else 0.0,
                "app_reads_per_replica_per_10s": reads / settings.fleet_replicas / elapsed * 10 if elapsed else 0.0,
            })
            for name in names[:rotations]:
                rig.fake.set_secret(name, secret_value(name))
    return {
        "replicas": settings.fleet_replicas,
        "hot_secrets": settings.hot,
        "vault_secrets": len(names) + len(others),
        "ttl": ttl,
        "read_period_s": settings.fleet_period,
        "seconds": settings.fleet_seconds,
        "rotate_every_s": settings.fleet_rotate_every,
        "vault_limit_per_10s": KEY_VAULT_LIMIT_PER_10S,
        "modes": modes,
    }


#: Key Vault's documented service limit for secret GETs, per vault (research/keyvault-and-managed-identity.md).
KEY_VAULT_LIMIT_PER_10S = 4_000


# ---- (g) cold BulkGets at the vault's limit -------------------------------------------------------


def limited_bulk(ctx: Context, settings: Settings) -> dict[str, object]:
    """Several cold instances BulkGet every secret at once against a vault-wide limit: wall time
    against the floor the limit allows, 429s received, failures."""
    rig = ctx.rig
    rig.clear()
    secrets = settings.bulk_secrets
    rig.preload(secret_name("bulk", i) for i in range(secrets))
    rig.fake.set_latency(settings.latency)
    allowed, window = settings.limit_requests, settings.limit_window
    processes = settings.limit_processes
    specs = [_production(ctx, f"bridge-limit-{p}") for p in range(processes)]
    instances = [(f"cold-{i}", i % processes) for i in range(settings.limit_instances)]
    results: dict[str, object] = {}
    errors: dict[str, str] = {}
    with _running(ctx, specs) as servers:
        for instance, p in instances:
            bridge = Bridge(servers[p].socket)
            try:
                bridge.init(rig.metadata(requestTimeout="10s"), instance=instance)
            finally:
                bridge.close()
        time.sleep(0.5)  # Init's readiness probes stay out of the window count
        rig.fake.reset_counters()
        rig.fake.limit(allowed, window)
        go = threading.Event()
        finished: dict[str, float] = {}

        def bulk(instance: str, p: int) -> None:
            bridge = Bridge(servers[p].socket)
            try:
                go.wait()
                got = bridge.bulk_get(instance=instance, timeout=300)
                finished[instance] = time.perf_counter()
                results[instance] = len(got)
            except grpc.RpcError as err:
                errors[instance] = f"{err.code().name}: {err.details()}"
            finally:
                bridge.close()

        threads = [threading.Thread(target=bulk, args=(i, p)) for i, p in instances]
        for thread in threads:
            thread.start()
        started = time.perf_counter()
        go.set()
        for thread in threads:
            thread.join(320)
        wall = max(finished.values(), default=time.perf_counter()) - started
        rig.fake.limit(None)
    served = rig.fake.count("total") - rig.fake.count("throttled") - rig.fake.count("challenge")
    pages = math.ceil(secrets / LIST_PAGE)
    needed = settings.limit_instances * (secrets + pages)
    # The last of `needed` requests cannot start before its window opens, nor end before the vault answers.
    floor = max((math.ceil(needed / allowed) - 1) * window, bulk_model_seconds(secrets, DEFAULT_BULK_CONCURRENCY,
                                                                               settings.latency)) + settings.latency
    return {
        "instances": settings.limit_instances,
        "processes": processes,
        "secrets_each": secrets,
        "vault_latency_s": settings.latency,
        "limit_requests": allowed,
        "limit_window_s": window,
        "requests_needed": needed,
        "requests_served": served,
        "throttled_429": rig.fake.count("limited"),
        # Of every answer the vault gave the fleet, the share that was a 429 (issue 21: at most 10 %).
        "throttled_share": rig.fake.count("limited") / max(1, served + rig.fake.count("limited")),
        "wall_s": wall,
        "floor_s": floor,
        "ratio_to_floor": wall / floor if floor else 0.0,
        "complete": sum(1 for n in results.values() if n == secrets),
        "failed": errors,
    }


# ---- (h) side by side through one daprd ---------------------------------------------------------


def side_by_side(ctx: Context, settings: Settings) -> dict[str, object]:
    """The built-in Key Vault store and secretbridge, through the same daprd, on the same double."""
    daprd_path, why = daprd.find_daprd()
    reason = why or daprd.cannot_run()
    if daprd_path is None or reason:
        return {"skipped": reason or "no daprd"}
    folder = ctx.folder / "side"
    folder.mkdir(exist_ok=True)
    certs = TestCertificates(folder / "tls", hosts=(daprd.VAULT_HOST, daprd.VAULT_ADDRESS))
    rig = ctx.rig
    names = [secret_name("side", i) for i in range(settings.side_secrets)]
    hot = names[: settings.hot]
    vault = FakeKeyVault(certs, identity=rig.identity, host=daprd.VAULT_ADDRESS, port=443,
                         public_url=f"https://{daprd.VAULT_HOST}")
    vault.start()
    try:
        for name in names:
            vault.set_secret(name, secret_value(name))
        vault.set_latency(settings.latency)
        env = dict(ctx.env)
        env["SSL_CERT_FILE"] = str(certs.ca_path)
        stores: dict[str, dict[str, Any]] = {}
        with daprd.running(folder, daprd_path, env) as running:
            for store in (daprd.BUILTIN, daprd.BRIDGE):
                url = f"{running.base}/secrets/{store}"
                vault.reset_counters()
                # Every hot secret read once first (secretbridge's cache is primed by it, as by an
                # app's first reads); counted with the load's reads below.
                for name in hot:
                    status, body = daprd.http_get(f"{url}/{name}", timeout=60)
                    if status != 200:
                        raise RuntimeError(f"{store}: GET {name} answered {status}: {body[:300]!r}")
                levels = []
                for inflight in settings.levels:
                    job = LoadJob(
                        label=store, socket="", inflight=inflight, keys=hot, max_calls=settings.max_calls,
                        max_seconds=settings.seconds, http_base=url,
                    )
                    (result,) = run_in_subprocess([job], env)
                    levels.append(asdict(result))
                app_reads = len(hot) + sum(level["calls"] for level in levels)
                gets = vault.count("get")
                vault.reset_counters()
                started = time.perf_counter()
                status, body = daprd.http_get(f"{url}/bulk", timeout=600)
                bulk_s = time.perf_counter() - started
                bulk_count = len(json.loads(body)) if status == 200 else 0
                stores[store] = {
                    "levels": levels,
                    "app_reads": app_reads,
                    "vault_gets": gets,
                    "vault_gets_per_1000_reads": gets / app_reads * 1000 if app_reads else 0.0,
                    "bulk_s": bulk_s,
                    "bulk_status": status,
                    "bulk_secrets": bulk_count,
                    "bulk_vault_requests": vault.count("total") - vault.count("challenge"),
                }
    finally:
        vault.stop()
    return {
        "vault": daprd.VAULT_HOST,
        "daprd": str(daprd_path),
        "secrets": len(names),
        "hot_secrets": len(hot),
        "vault_latency_s": settings.latency,
        "seconds_per_run": settings.seconds,
        "stores": stores,
    }


# ---- (i) the limit through daprd ------------------------------------------------------------------

#: (i)'s stores, all in one daprd: (label, Component name, Component type, its metadata (filled in later)).
#: The built-in file store has no socket hop at all; the echo is the fastest a Python pluggable store
#: can answer; secretbridge serves its three Components on one socket, as deployed.
BUILTIN_FILE = "built-in local.file"
#: The ceiling for a Python store, and every other store's yardstick: each of their runs is measured
#: between two of its runs (see `through_daprd`). It was the fastest echo in every cell of every full
#: run of (i) once (i) placed its processes: at 16 and 64 in flight the aio echo answered 0.51-0.62 of
#: it and the 16-worker one 0.87-0.97, and at 1 in flight every threaded echo is the same server
#: running one call at a time; so (i) no longer spends time on them ((a) still compares serving models).
REFERENCE_ECHO = "echo threaded (4 workers)"
#: Not a ceiling but a diagnosis: the echo on secretbridge's own worker pool (64 workers, 4 running), so the
#: pool's cost and the handler's can be told apart. Asked for by name only (`through_daprd`'s `labels`):
#: five full runs put it at 0.97-1.04 of the reference echo, the pool costs nothing measurable, and its
#: runs are better spent on more rounds of the stores the target is about.
POOL_ECHO = "echo on secretbridge's pool (64 workers)"
THROUGH_BRIDGE = ("secretbridge file", "secretbridge containerapps", "secretbridge keyvault (cached)")


def _component(name: str, kind: str, metadata: dict[str, str]) -> str:
    items = "".join(f"  - name: {key}\n    value: {json.dumps(value)}\n" for key, value in metadata.items())
    return (f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n"
            f"  type: secretstores.{kind}\n  version: v1\n  metadata:\n{items}")


#: The process serving each of (i)'s stores (by its name in `daprd.running`); the built-in one has none.
THROUGH_SERVER = {REFERENCE_ECHO: "echo-t4", POOL_ECHO: "echo-pool", **dict.fromkeys(THROUGH_BRIDGE, "secretbridge")}


def _hot_stores(ctx: Context, settings: Settings, name: str) -> tuple[list[str], Path, dict[str, dict[str, str]]]:
    """The hot secrets in the fake vault alone and in a secrets file and a volume under the folder
    `name`: (their names, the folder, Init metadata for secretbridge's file, containerapps and
    cached keyvault, by label)."""
    ctx.rig.clear()
    names = hot_names(settings.hot)
    ctx.rig.preload(names)
    folder = ctx.folder / name
    folder.mkdir(exist_ok=True)
    locals_ = local_metadata(folder, names)
    return names, folder, {
        "secretbridge file": locals_["bench-file"],
        "secretbridge containerapps": locals_["bench-containerapps"],
        # A TTL longer than any section: every measured read is a cache hit.
        "secretbridge keyvault (cached)": ctx.rig.metadata(cacheTTL="1h"),
    }


def placement(stores: Collection[str]) -> dict[str, set[int]]:
    """Where (i)'s processes run: every store process on one CPU; daprd and the load generator (wrk,
    "daprd" here too) on the others.

    Left to the scheduler on a 2-vCPU machine, wrk, daprd's goroutines and a Python server's
    threads were moved between both CPUs from one run to the next: the same store's calls/s swung
    by 0.55-1.65x from one second to the next, and with the threads of a GIL-bound process spread
    over two CPUs, each hand-off of the GIL also woke a thread on the other one. Placed, daprd spent
    about two thirds and the store about half the CPU per Get, and the runs swung less
    (docs/benchmarks.md, (i)).
    Every store is placed the same way, so the comparison stays fair; the built-in store, inside
    daprd, gets daprd's CPUs. A machine with one CPU runs everything on it."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return {}
    return {"daprd": set(usable[:-1]), **{name: {usable[-1]} for name in stores}}


def through_daprd(ctx: Context, settings: Settings, labels: Collection[str] = THROUGH_BRIDGE) -> dict[str, object]:
    """Cached Gets through one daprd's HTTP API: built-in local.file, a bare Python echo pluggable
    store (the reference) and secretbridge's file, containerapps and cached keyvault, per in-flight
    level, as ratios to the echo (each run against the echo's runs either side of it) and to the
    built-in store; the CPU daprd and the store's process spent per Get; and, with py-spy, where
    secretbridge's time goes. `labels`: the stores measured besides the built-in one and the
    reference echo (which always are): secretbridge's three by default; `POOL_ECHO` on request."""
    daprd_path, why = daprd.find_daprd()
    if daprd_path is None:
        return {"skipped": why or "no daprd"}
    rig = ctx.rig
    names, folder, bridged = _hot_stores(ctx, settings, "through")
    sockets = folder / "sockets"
    stores = {  # label → (Component name, type, metadata)
        BUILTIN_FILE: ("builtin-file", "local.file", {"secretsFile": bridged["secretbridge file"]["secretsFile"]}),
        REFERENCE_ECHO: ("echo-t4", "echo-t4", {}),
        POOL_ECHO: ("echo-pool", "echo-pool", {}),
        "secretbridge file": ("sb-file", "secretbridge", bridged["secretbridge file"]),
        "secretbridge containerapps": ("sb-containerapps", "secretbridge", bridged["secretbridge containerapps"]),
        "secretbridge keyvault (cached)": ("sb-keyvault", "secretbridge", bridged["secretbridge keyvault (cached)"]),
    }
    always = (BUILTIN_FILE, REFERENCE_ECHO)
    stores = {label: store for label, store in stores.items() if label in labels or label in always}
    components = "---\n".join(_component(name, kind, meta) for name, kind, meta in stores.values())
    # The echoes of (a) measured here (a socket's name is its type).
    echoes = (("echo-t4", "echo-threaded", 4), ("echo-pool", "echo-pool", PRODUCTION_WORKERS))
    serving = {THROUGH_SERVER[label] for label in stores if label in THROUGH_SERVER}
    plugs = [(name, procs.bench_server_argv(kind, sockets / f"{name}.sock", workers))
             for name, kind, workers in echoes if name in serving]
    bracketed: dict[tuple[str, int], list[Bracketed]] = {}
    cpus = placement(["secretbridge", *(name for name, _ in plugs)])
    with daprd.running(folder, daprd_path, ctx.env, components, namespace=False, plugs=plugs, cpus=cpus) as started:

        def measure(label: str, inflight: int, seconds: int, max_calls: int) -> dict[str, Any]:
            pids = {"daprd": started.pids["daprd"]}
            if label in THROUGH_SERVER:
                pids["store"] = started.pids[THROUGH_SERVER[label]]
            return wrk.run(label, started.base, stores[label][0], names, inflight, seconds, folder, ctx.env,
                           max_calls, pids, cpus.get("daprd"))

        for label, (name, _, _) in stores.items():
            for key in names:  # every store answers every name (secretbridge's keyvault cache is primed)
                status, body = daprd.http_get(f"{started.base}/secrets/{name}/{key}", timeout=60)
                if status != 200:
                    raise RuntimeError(f"{label}: GET {key} answered {status}: {body[:300]!r}")
        rig.fake.reset_counters()
        for label in stores if settings.through_warmup else ():
            measure(label, 16, settings.through_seconds, 2_000)  # daprd's connections, each server's threads
        for round_ in range(settings.through_rounds):
            order = [label for label in stores if label != REFERENCE_ECHO]
            random.Random(round_).shuffle(order)
            for inflight in settings.levels:
                # Every store between two runs of the reference echo: the machine's pace drifts over
                # seconds, and against the mean of its neighbours a run's ratio moved about 0.6x as
                # much as against a run three or four seconds away (docs/benchmarks.md, (i)).
                before = measure(REFERENCE_ECHO, inflight, settings.through_seconds, settings.max_calls)
                references = bracketed.setdefault((REFERENCE_ECHO, inflight), [])
                references.append(Bracketed(before, before, before))
                for label in order:
                    run = measure(label, inflight, settings.through_seconds, settings.max_calls)
                    after = measure(REFERENCE_ECHO, inflight, settings.through_seconds, settings.max_calls)
                    bracketed.setdefault((label, inflight), []).append(Bracketed(run, before, after))
                    references.append(Bracketed(after, after, after))
                    before = after
        vault_reads = rig.fake.count("get")
        profiles = {}
        if settings.through_profile_seconds:
            for label in (REFERENCE_ECHO, "secretbridge file") if "secretbridge file" in stores else ():
                profiles[label] = profile.record(
                    started.pids[THROUGH_SERVER[label]], folder / f"profile-{stores[label][0]}.txt",
                    lambda label=label: measure(label, 16, settings.through_profile_seconds, settings.max_calls),
                    settings.through_profile_seconds,
                )
    return {
        "daprd": str(daprd_path),
        "load": wrk.generator(),
        "hot_secrets": len(names),
        "seconds_per_run": settings.through_seconds,
        "rounds": settings.through_rounds,
        "vault_reads_during_load": vault_reads,
        "levels": [_through_level(inflight, {label: bracketed[(label, inflight)] for label in stores})
                   for inflight in settings.levels],
        "profiles": profiles,
    }


class Bracketed(NamedTuple):
    """One run of a store and the reference echo's runs just before and just after it."""

    run: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]

    def relative(self, field: str, part: str | None = None) -> float:
        """The run's `field` (of `cpu_us_per_call`, `part`) over the mean of its neighbours'."""
        def of(result: dict[str, Any]) -> float:
            return float(result[field][part] if part is not None else result[field])

        reference = (of(self.before) + of(self.after)) / 2
        return of(self.run) / reference if reference else 0.0


def _through_level(inflight: int, runs: dict[str, list[Bracketed]]) -> dict[str, Any]:
    """Each store's best run, and its ratios to the reference echo (each run against the mean of the
    echo's runs either side of it; the median over rounds) and to the built-in store (the same
    round's ratios divided); the echo's own row holds every run of it."""
    builtin = runs[BUILTIN_FILE]
    builtin_rate = [b.relative("throughput") for b in builtin]
    builtin_p50 = [b.relative("p50_ms") for b in builtin]
    results = []
    for label, bracketed in runs.items():
        rounds = [b.run for b in bracketed]
        best = dict(max(rounds, key=lambda r: r["throughput"]))
        if label == REFERENCE_ECHO:
            to_echo, p50_to_echo = [1.0] * len(builtin), [1.0] * len(builtin)
        else:
            to_echo = [b.relative("throughput") for b in bracketed]
            p50_to_echo = [b.relative("p50_ms") for b in bracketed]
        to_builtin = [mine / theirs if theirs else 0.0 for mine, theirs in zip(to_echo, builtin_rate, strict=True)]
        p50_to_builtin = [mine / theirs if theirs else 0.0
                          for mine, theirs in zip(p50_to_echo, builtin_p50, strict=True)]
        best.update(
            every_round=[round(r["throughput"], 1) for r in rounds],
            rounds=[{k: r[k] for k in ("throughput", "p50_ms", "p99_ms", "cpu_us_per_call")} for r in rounds],
            ratio_rounds=to_echo, ratio_to_echo=statistics.median(to_echo),
            builtin_ratio_rounds=to_builtin, ratio_to_builtin=statistics.median(to_builtin),
            p50_to_echo=statistics.median(p50_to_echo), p50_to_builtin=statistics.median(p50_to_builtin),
            errors={k: v for r in rounds for k, v in r["errors"].items()},
            cpu_us_per_call={name: statistics.median(r["cpu_us_per_call"][name] for r in rounds)
                             for name in rounds[0]["cpu_us_per_call"]},
        )
        if "store" in rounds[0]["cpu_us_per_call"]:
            # The store process's CPU per Get against the echo's: a busy machine moves calls/s far
            # more than CPU per call, so this says whether a gap is the code or the machine.
            best["cpu_to_echo"] = 1.0 if label == REFERENCE_ECHO else statistics.median(
                b.relative("cpu_us_per_call", "store") for b in bracketed)
        results.append(best)
    return {"inflight": inflight, "echo": REFERENCE_ECHO, "results": results}


#: The threads of (j)'s second measure: the server runs at most this many calls at once (WorkerPool).
HANDLER_THREADS = RUNNING_WORKERS


class _Call:
    """What the servicer reads of a gRPC call: the metadata daprd sends (the instance header)."""

    def __init__(self, instance: str) -> None:
        self.metadata = (("user-agent", "grpc-go"), (INSTANCE_HEADER, instance))

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise RuntimeError(f"{code.name}: {details}")


def handler(ctx: Context, settings: Settings) -> dict[str, object]:
    """(j) The servicer's `Get` called in this process on primed instances (no gRPC, no socket): the
    Python secretbridge spends per cached Get, request bytes in and answer bytes out, on one thread
    and on as many threads as the server runs calls at once, beside the bare echo's handler with the
    parse and serialize gRPC runs around it. Through daprd that work is a few % of the store
    process's CPU per Get (section (i)), so this is where a change to it shows without the noise."""
    from unittest import mock

    from secretbridge.runtime.instances import Instances
    from secretbridge.runtime.loop import LoopThread
    from secretbridge.runtime.server import SecretStoreServicer

    from bench.servers import ThreadedEcho

    names, _, stores = _hot_stores(ctx, settings, "handler")
    # As gRPC hands them to a handler registered without a deserializer (secretbridge's Get is).
    requests = [secretstore_pb2.GetSecretRequest(key=name).SerializeToString() for name in names]
    io = LoopThread().start()
    # The Key Vault client is made here, so it finds the fake identity and trusts the test CA as a child would.
    env = {k: v for k, v in os.environ.items() if k not in IDENTITY_ENV_VARS}
    env.update((k, v) for k, v in ctx.env.items() if k in (*IDENTITY_ENV_VARS, "SSL_CERT_FILE", "NO_PROXY", "no_proxy"))
    try:
        with mock.patch.dict("os.environ", env, clear=True):
            instances = Instances(policy=OperatorPolicy(vault_hosts=frozenset({("127.0.0.1", None)})))
            servicer = SecretStoreServicer(instances, io)
            echo = ThreadedEcho().Get
            parse = secretstore_pb2.GetSecretRequest.FromString

            def echo_on_the_wire(request: bytes, call: _Call) -> bytes:
                # What gRPC does around the echo's handler, registered with the generated code.
                return bytes(echo(parse(request), call).SerializeToString())

            handlers: dict[str, Any] = {"echo (threaded)": echo_on_the_wire}
            for label, metadata in stores.items():
                io.run(instances.init(label, metadata), 60)
                handlers[label] = servicer.Get
            results = []
            for label, get in handlers.items():
                call = _Call(label)
                for request in requests:  # primes the cache: every timed call is a hit
                    get(request, call)
                results.append({"label": label,
                                "us_per_get": _time_handler(get, call, requests, settings, 1),
                                "us_per_get_threads": _time_handler(get, call, requests, settings, HANDLER_THREADS)})
        io.run(instances.close_all(), 60)
    finally:
        io.stop()
    return {"hot_secrets": len(names), "calls_per_run": settings.handler_calls, "runs": settings.handler_runs,
            "threads": HANDLER_THREADS, "results": results}


def _time_handler(get: Any, call: _Call, requests: list[Any], settings: Settings, threads: int) -> float:
    """µs per call of `get` over `requests`, the fastest of the runs, `threads` calling at once."""
    calls = settings.handler_calls

    def work() -> None:
        for i in range(calls):
            get(requests[i % len(requests)], call)

    best = math.inf
    for _ in range(settings.handler_runs):
        workers = [threading.Thread(target=work) for _ in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        best = min(best, time.perf_counter() - started)
    return best / (calls * threads) * 1e6


SECTIONS = {
    "cached_get": cached_get,
    "bulk_get": bulk_get,
    "hot_reads": hot_reads,
    "memory": memory,
    "bulkhead": bulkhead,
    "fleet": fleet,
    "limited_bulk": limited_bulk,
    "side_by_side": side_by_side,
    "through_daprd": through_daprd,
    "handler": handler,
}
