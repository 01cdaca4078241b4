"""The soak's readers, in a process of their own: callers over secretbridge's socket and an app through daprd.

`python -m bench.soak.callers`: the first line of stdin is a `CallerPlan` (JSON); later lines change
what the socket callers read (`{"add": [[instance, name], ...]}`, `{"remove": [...]}`) or stop them
(`{"stop": true}`, or end of input: a soak that dies takes its readers with it). Every caller is
paced (`rate` reads a second shared by all of them) and never catches up in a burst, so a failing
read costs no more than a good one and a fault cannot turn the callers into a busy loop.

Each read is recorded as (when it was sent, how long it took, who read it, what, the outcome) and
written to `records` at the end; the soak's analysis puts them into phases by when they were sent.
An outcome is `OK`, a gRPC code name, `HTTP <status>`, a client error's class, or `WRONG_VALUE`
(an answer whose value is not one the soak ever wrote for that name).
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from secretbridge.proto.components.v1 import secretstore_pb2, secretstore_pb2_grpc

from bench.workload import INSTANCE_HEADER

#: Who read: the callers on the socket, or the app through daprd.
SOCKET, APP = 0, 1
#: The socket callers' reconnect backoff (ms): after secretbridge restarts, a caller is connected again
#: within this much of the socket answering, so the soak can tell a restart's failures from later ones.
RECONNECT_BACKOFF_MS = 250
#: gRPC spreads each reconnect delay by up to this share either way (its connection-backoff spec,
#: JITTER = 0.2), so the channel may still be backing off for this much longer than the backoff.
RECONNECT_JITTER = 0.2
#: How long after the socket answers a caller may still meet "failed to connect" (ms): the longest
#: backoff gRPC may draw.
RECONNECT_GRACE_MS = round(RECONNECT_BACKOFF_MS * (1 + RECONNECT_JITTER))
#: How many failures the records keep the error text of (a restart alone fails a few thousand reads).
MAX_FAILURES = 50_000


@dataclass
class CallerPlan:
    """What the reader process does; `pool` and `app_pool` are (instance or component, name) pairs."""

    socket: str
    callers: int
    rate: float
    pool: list[list[str]]
    records: str
    max_seconds: float
    call_timeout: float
    seed: int = 21
    app_base: str | None = None
    app_callers: int = 0
    app_rate: float = 0.0
    app_pool: list[list[str]] = field(default_factory=list)


@dataclass
class Records:
    """Every read, column by column (array module: a 10-minute soak's million reads in ~20 MB)."""

    sent: array.array[float] = field(default_factory=lambda: array.array("d"))
    took: array.array[float] = field(default_factory=lambda: array.array("f"))
    source: array.array[int] = field(default_factory=lambda: array.array("B"))
    target: array.array[int] = field(default_factory=lambda: array.array("I"))
    outcome: array.array[int] = field(default_factory=lambda: array.array("B"))
    targets: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    #: Failures, up to MAX_FAILURES of them, as (when sent, source, target, outcome, what the error said).
    failures: list[tuple[float, int, str, str, str]] = field(default_factory=list)

    COLUMNS = ("sent", "took", "source", "target", "outcome")

    def add(self, sent: float, took: float, source: int, target: str, outcome: str, detail: str = "") -> None:
        if outcome != "OK" and len(self.failures) < MAX_FAILURES:
            self.failures.append((sent, source, target, outcome, detail[:300]))
        self.sent.append(sent)
        self.took.append(took)
        self.source.append(source)
        self.target.append(self.targets.setdefault(target, len(self.targets)))
        self.outcome.append(self.outcomes.setdefault(outcome, len(self.outcomes)))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for column in self.COLUMNS:
            with (folder / f"{column}.bin").open("wb") as sink:
                getattr(self, column).tofile(sink)
        (folder / "tables.json").write_text(json.dumps(
            {"targets": self.targets, "outcomes": self.outcomes, "failures": self.failures}))

    @classmethod
    def load(cls, folder: Path) -> Records:
        records = cls()
        for column in cls.COLUMNS:
            data = (folder / f"{column}.bin").read_bytes()
            getattr(records, column).frombytes(data)
        tables = json.loads((folder / "tables.json").read_text())
        records.targets = tables["targets"]
        records.outcomes = tables["outcomes"]
        records.failures = [(sent, source, target, outcome, detail)
                            for sent, source, target, outcome, detail in tables["failures"]]
        return records


def plausible(name: str, value: str | None) -> bool:
    """Whether `value` is one the soak wrote for `name` (every value is `<name>:<version>`)."""
    return value is not None and value.startswith(name + ":")


def target_key(instance: str, name: str) -> str:
    """How a read's target is named in the records."""
    return f"{instance}/{name}"


async def _paced(
    rate_each: float, rng: random.Random, stop: asyncio.Event, deadline: float,
    read: Callable[[], Awaitable[None]],
) -> None:
    """Call `read` every 1/rate_each seconds (first at a random offset), never bursting to catch up."""
    interval = 1.0 / rate_each
    due = time.monotonic() + rng.random() * interval
    while not stop.is_set() and time.monotonic() < deadline:
        wait = due - time.monotonic()
        if wait > 0:
            try:
                await asyncio.wait_for(stop.wait(), wait)
                return
            except TimeoutError:
                pass
        await read()
        due += interval
        now = time.monotonic()
        if due < now:
            due = now  # behind (a slow read): carry on from now, no burst


async def _socket_callers(plan: CallerPlan, pool: list[tuple[str, str]], records: Records, stop: asyncio.Event,
                          deadline: float) -> None:
    options = [
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS // 2),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS // 2),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
    ]
    # One channel for every caller, as daprd keeps one connection to a component's socket.
    async with grpc.aio.insecure_channel(f"unix://{plan.socket}", options=options) as channel:
        stub = secretstore_pb2_grpc.SecretStoreStub(channel)

        async def caller(seed: int) -> None:
            rng = random.Random(seed)

            async def read() -> None:
                instance, name = pool[rng.randrange(len(pool))]
                sent = time.monotonic()
                try:
                    reply = await stub.Get(secretstore_pb2.GetSecretRequest(key=name),
                                           metadata=[(INSTANCE_HEADER, instance)], timeout=plan.call_timeout)
                    outcome, detail = ("OK", "") if plausible(name, reply.data.get(name)) else ("WRONG_VALUE", "")
                except grpc.aio.AioRpcError as err:
                    outcome, detail = err.code().name, err.details() or ""
                records.add(sent, time.monotonic() - sent, SOCKET, target_key(instance, name), outcome, detail)

            await _paced(plan.rate / plan.callers, rng, stop, deadline, read)

        await asyncio.gather(*(caller(plan.seed * 1000 + i) for i in range(plan.callers)))


async def _app_callers(plan: CallerPlan, records: Records, stop: asyncio.Event, deadline: float) -> None:
    pool = [(component, name) for component, name in plan.app_pool]
    timeout = aiohttp.ClientTimeout(total=plan.call_timeout)
    connector = aiohttp.TCPConnector(limit=max(plan.app_callers, 1))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def caller(seed: int) -> None:
            rng = random.Random(seed)

            async def read() -> None:
                component, name = pool[rng.randrange(len(pool))]
                sent = time.monotonic()
                detail = ""
                try:
                    async with session.get(f"{plan.app_base}/secrets/{component}/{name}") as response:
                        body = await response.read()
                        if response.status != 200:
                            outcome, detail = f"HTTP {response.status}", body.decode(errors="replace")
                        else:
                            data: Any = json.loads(body)
                            outcome = "OK" if isinstance(data, dict) and plausible(name, data.get(name)) \
                                else "WRONG_VALUE"
                except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                    outcome, detail = type(err).__name__, str(err)
                records.add(sent, time.monotonic() - sent, APP, target_key(component, name), outcome, detail)

            await _paced(plan.app_rate / plan.app_callers, rng, stop, deadline, read)

        await asyncio.gather(*(caller(plan.seed * 1000 + 500 + i) for i in range(plan.app_callers)))


async def _commands(pool: list[tuple[str, str]], stop: asyncio.Event) -> None:
    """Apply stdin's commands to the socket callers' pool until `stop` or end of input."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        if command.get("stop"):
            break
        for pair in command.get("add", []):
            if tuple(pair) not in pool:
                pool.append((pair[0], pair[1]))
        for pair in command.get("remove", []):
            if tuple(pair) in pool:
                pool.remove((pair[0], pair[1]))
    stop.set()


async def run(plan: CallerPlan) -> dict[str, Any]:
    """Read until told to stop, stdin closes or `max_seconds` pass; save the records."""
    records = Records()
    stop = asyncio.Event()
    deadline = time.monotonic() + plan.max_seconds
    pool = [(instance, name) for instance, name in plan.pool]
    started = time.monotonic()
    commands = asyncio.ensure_future(_commands(pool, stop))
    print(json.dumps({"ready": True}), flush=True)  # the soak's warm-up starts from here
    work = [_socket_callers(plan, pool, records, stop, deadline)]
    if plan.app_base and plan.app_callers and plan.app_pool:
        work.append(_app_callers(plan, records, stop, deadline))
    await asyncio.gather(*work)
    stop.set()
    commands.cancel()
    records.save(Path(plan.records))
    return {"reads": len(records.sent), "seconds": time.monotonic() - started}


def main() -> int:
    plan = CallerPlan(**json.loads(sys.stdin.readline()))
    summary = asyncio.run(run(plan))
    print(json.dumps(summary), flush=True)
    # The stdin reader thread may still be blocked in readline(): leave without waiting for it.
    sys.stdout.flush()
    os._exit(0)


def plan_json(plan: CallerPlan) -> str:
    """The first line the reader process expects."""
    return json.dumps(asdict(plan))


if __name__ == "__main__":
    sys.exit(main())
