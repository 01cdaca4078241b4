"""The load generator: a grpc.aio client keeping N unary `SecretStore/Get` calls in flight.

It runs in a process of its own (`python -m bench.load`, jobs as JSON on stdin,
results as JSON on stdout) so its CPU never shares a GIL with the server it
measures. One channel per job, as daprd keeps one connection per Component.
Every job is bounded twice: by a number of calls and by a number of seconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import grpc
from secretbridge.proto.components.v1 import secretstore_pb2, secretstore_pb2_grpc

from bench.procs import process_cpu_seconds
from bench.vault import REPO_ROOT
from bench.workload import INSTANCE_HEADER

#: A single call that takes longer than this is counted as an error, not waited for.
CALL_TIMEOUT = 30.0


@dataclass
class LoadJob:
    """One measurement: `inflight` callers asking for `keys` in turn, round-robin."""

    label: str
    socket: str
    inflight: int
    keys: list[str]
    max_calls: int
    max_seconds: float
    warmup_calls: int = 0
    warmup_seconds: float = 0.0
    instance: str | None = None
    #: The server's pid, to charge it the CPU it spent during the measured phase.
    server_pid: int | None = None
    #: Instead of gRPC: `GET <http_base>/<key>` over HTTP (an app reading daprd's secrets API).
    http_base: str | None = None


@dataclass
class LoadResult:
    """What one job measured; latencies in milliseconds, CPU in microseconds per call."""

    label: str
    inflight: int
    calls: int
    seconds: float
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_us_per_call: float
    server_cpu_us_per_call: float | None
    errors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LoadResult:
        return cls(**data)  # type: ignore[arg-type]


def percentile(sorted_values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def _drive(
    stub: Any,
    requests: Sequence[secretstore_pb2.GetSecretRequest],
    metadata: Sequence[tuple[str, str]],
    inflight: int,
    max_calls: int,
    max_seconds: float,
    latencies: list[float] | None,
    errors: Counter[str],
) -> tuple[int, float]:
    """Keep `inflight` calls going until either bound; returns (calls that succeeded, wall seconds)."""
    issued = 0
    ok = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    async def caller() -> None:
        nonlocal issued, ok
        # One event loop: the check-and-increment below cannot interleave with another caller's.
        while issued < max_calls and time.perf_counter() < deadline:
            request = requests[issued % len(requests)]
            issued += 1
            sent = time.perf_counter()
            try:
                await stub.Get(request, metadata=metadata, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as err:
                errors[err.code().name] += 1
                continue
            except _HttpError as err:
                errors[f"HTTP {err.status}"] += 1
                continue
            except (aiohttp.ClientError, TimeoutError) as err:
                errors[type(err).__name__] += 1
                continue
            if latencies is not None:
                latencies.append(time.perf_counter() - sent)
            ok += 1

    await asyncio.gather(*(caller() for _ in range(inflight)))
    return ok, time.perf_counter() - started


class _HttpStub:
    """`Get` as an app does it through daprd: `GET <base>/<key>`, one keep-alive pool."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def Get(self, request: secretstore_pb2.GetSecretRequest, **_: object) -> None:
        async with self.session.get(f"{self.base}/{request.key}") as response:
            await response.read()
            if response.status != 200:
                raise _HttpError(response.status)


class _HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def run_job(job: LoadJob) -> LoadResult:
    """Warm up, then measure; the channel is this job's alone."""
    if job.http_base is not None:
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=max(job.inflight, 1))
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            return await _measure(job, _HttpStub(session, job.http_base))
    async with grpc.aio.insecure_channel(f"unix://{job.socket}") as channel:
        return await _measure(job, secretstore_pb2_grpc.SecretStoreStub(channel))


async def _measure(job: LoadJob, stub: Any) -> LoadResult:
    requests = [secretstore_pb2.GetSecretRequest(key=key) for key in job.keys]
    metadata = [(INSTANCE_HEADER, job.instance)] if job.instance is not None else []
    errors: Counter[str] = Counter()
    if job.warmup_calls and job.warmup_seconds:
        await _drive(stub, requests, metadata, job.inflight, job.warmup_calls, job.warmup_seconds, None, errors)
        errors.clear()
    latencies: list[float] = []
    client_cpu = time.process_time()
    server_cpu = process_cpu_seconds(job.server_pid) if job.server_pid else None
    ok, seconds = await _drive(
        stub, requests, metadata, job.inflight, job.max_calls, job.max_seconds, latencies, errors
    )
    client_used = time.process_time() - client_cpu
    server_used = process_cpu_seconds(job.server_pid) - server_cpu if server_cpu is not None else None
    latencies.sort()
    per_call = 1e6 / ok if ok else 0.0
    return LoadResult(
        label=job.label,
        inflight=job.inflight,
        calls=ok,
        seconds=round(seconds, 4),
        throughput=ok / seconds if seconds > 0 else 0.0,
        p50_ms=percentile(latencies, 0.50) * 1e3,
        p90_ms=percentile(latencies, 0.90) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
        max_ms=(latencies[-1] if latencies else 0.0) * 1e3,
        client_cpu_us_per_call=client_used * per_call,
        server_cpu_us_per_call=server_used * per_call if server_used is not None else None,
        errors=dict(errors),
    )


async def run_jobs(jobs: Sequence[LoadJob]) -> list[LoadResult]:
    """One after another, never overlapping: each job has the machine's second core to itself."""
    return [await run_job(job) for job in jobs]


def run_in_subprocess(jobs: Sequence[LoadJob], env: Mapping[str, str]) -> list[LoadResult]:
    """Run `jobs` in a fresh `python -m bench.load` process and return its results."""
    budget = sum(job.max_seconds + job.warmup_seconds + 15 for job in jobs) + 30
    done = subprocess.run(
        [sys.executable, "-m", "bench.load"],
        input=json.dumps([asdict(job) for job in jobs]).encode(),
        capture_output=True, cwd=REPO_ROOT, env=dict(env), timeout=budget, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}):\n{done.stderr.decode(errors='replace')}")
    lines = done.stdout.decode().strip().splitlines()
    return [LoadResult.from_dict(item) for item in json.loads(lines[-1])]


def main() -> int:
    """Jobs (a JSON list of LoadJob fields) on stdin; results (a JSON list) on stdout's last line."""
    jobs = [LoadJob(**item) for item in json.loads(sys.stdin.read())]
    results = asyncio.run(run_jobs(jobs))
    print(json.dumps([asdict(result) for result in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

