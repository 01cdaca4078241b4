"""HTTP load through daprd with `wrk` (a C load generator), or with bench.load when wrk is missing.

An app reading secrets through daprd sends `GET /v1.0/secrets/<store>/<name>`. At the rates daprd's
built-in stores reach (tens of thousands a second), a Python client would measure itself; wrk keeps
N connections busy from one thread at a few percent of a core, so the ceiling measured is daprd's
and the store's. Each connection has one request in flight, so N connections are N in flight.
The names are read round-robin from a Lua script; its `done` hook prints the figures as JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.load import LoadJob, run_in_subprocess
from bench.procs import on_cpus, process_cpu_seconds

SCRIPT = """\
local requests = {}
local next_one = 0

init = function(args)
  for _, path in ipairs(args) do
    requests[#requests + 1] = wrk.format("GET", path)
  end
end

request = function()
  next_one = next_one % #requests + 1
  return requests[next_one]
end

done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def generator() -> str:
    """What drives the load here: `wrk <version>` when installed, else bench.load's aiohttp client."""
    found = shutil.which("wrk")
    if found is None:
        return "bench.load (aiohttp; install wrk for a client that is not the bottleneck)"
    first = subprocess.run([found, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


def run(
    label: str, base: str, store: str, names: Sequence[str], inflight: int, seconds: int, folder: Path,
    env: Mapping[str, str], max_calls: int, pids: Mapping[str, int] | None = None, cpus: set[int] | None = None,
) -> dict[str, Any]:
    """One measurement of `GET <base>/secrets/<store>/<name>` at `inflight`: bench.load's result fields,
    and `cpu_us_per_call`: the CPU each process in `pids` (name → pid) spent per answered Get meanwhile.
    `cpus`: the CPUs the load generator runs on (None: any)."""
    before = {name: process_cpu_seconds(pid) for name, pid in (pids or {}).items()}
    result = _run(label, base, store, names, inflight, seconds, folder, env, max_calls, cpus)
    per_call = 1e6 / result["calls"] if result["calls"] else 0.0
    result["cpu_us_per_call"] = {name: (process_cpu_seconds(pid) - before[name]) * per_call
                                 for name, pid in (pids or {}).items()}
    return result


def _run(
    label: str, base: str, store: str, names: Sequence[str], inflight: int, seconds: int, folder: Path,
    env: Mapping[str, str], max_calls: int, cpus: set[int] | None,
) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        job = LoadJob(label=label, socket="", inflight=inflight, keys=list(names), max_calls=max_calls,
                      max_seconds=float(seconds), http_base=f"{base}/secrets/{store}")
        (result,) = run_in_subprocess([job], env)
        return asdict(result)
    script = folder / "round_robin.lua"
    if not script.exists():
        script.write_text(SCRIPT)
    root, _, _ = base.partition("/v1.0")
    paths = [f"/v1.0/secrets/{store}/{name}" for name in names]
    argv = [wrk, "-t1", f"-c{inflight}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), root, "--", *paths]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False,
                          preexec_fn=on_cpus(cpus))
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    took = figures["duration_us"] / 1e6
    errors = {name: figures[key] for name, key in (("socket", "socket_errors"), ("non-2xx", "non_2xx"))
              if figures[key]}
    ok = figures["requests"] - figures["non_2xx"]
    return {
        "label": label, "inflight": inflight, "calls": ok, "seconds": round(took, 4),
        "throughput": ok / took if took > 0 else 0.0,
        "p50_ms": figures["p50_us"] / 1e3, "p90_ms": figures["p90_us"] / 1e3, "p99_ms": figures["p99_us"] / 1e3,
        "max_ms": figures["max_us"] / 1e3, "errors": errors,
    }
