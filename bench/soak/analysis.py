"""From the soak's raw material to its figures, its targets' verdicts and its table.

Each read belongs to the phase in which it was sent. Three kinds of read are set apart from the
failures the targets count, each by a rule stated in the report:

- *during restart*: in flight at some moment between the `kill -9` and the moment the restarted
  server's socket accepted a connection, plus the socket callers' longest reconnect backoff
  (`callers.RECONNECT_GRACE_MS`: the backoff and gRPC's 20 % jitter); for the app, until its first
  good read of that Component through daprd after the socket was back (daprd keeps a connection
  per Component and redials each on its own schedule; those delays are printed);
- *expected*: a read of a deleted (disabled) secret answered NOT_FOUND (FAILED_PRECONDITION) once
  the vault said so; such a name answered with a value *after* a read of it had been refused is
  counted as served after deletion, and any other code as a failure;
- *warm-up*: the first seconds, reported and not judged.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.load import percentile
from bench.report import Verdict, _table, machine_facts
from bench.soak.callers import APP, RECONNECT_GRACE_MS, SOCKET, Records
from bench.soak.run import FAULTS, KILL, STEADY, WARMUP

#: A fault phase's p99 may be at most this many times the steady phases'.
TARGET_P99_RATIO = 2.0
#: A rotation made during an outage is served within cacheTTL + this many seconds of the vault coming back.
TARGET_ROTATION_SLACK_S = 2.0
#: RSS over the second half of the run grows by less than this share.
TARGET_RSS_GROWTH = 0.10
#: RSS is compared as the median of this many samples at each end (one a second), so one sample's noise
#: (a garbage collection, a burst of replies) is not read as growth.
RSS_SAMPLES = 10
#: How many failures each tally keeps an example of.
FIRST_FAILURES = 10


@dataclass
class Tally:
    """The reads of one source (socket callers or app) in one phase, or in every phase of a kind."""

    reads: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    during_restart: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)
    served_after_doom: int = 0
    #: The first failures counted: (seconds into the phase it was sent, code, target, what the error said).
    first_failures: list[tuple[float, str, str, str]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    kv_latencies: list[float] = field(default_factory=list)
    local_latencies: list[float] = field(default_factory=list)

    def merge(self, other: Tally) -> None:
        self.reads += other.reads
        self.failed.update(other.failed)
        self.during_restart.update(other.during_restart)
        self.expected.update(other.expected)
        self.served_after_doom += other.served_after_doom
        self.first_failures += other.first_failures[: max(0, FIRST_FAILURES - len(self.first_failures))]
        self.latencies += other.latencies
        self.kv_latencies += other.kv_latencies
        self.local_latencies += other.local_latencies

    def summary(self) -> dict[str, Any]:
        every, kv, local = sorted(self.latencies), sorted(self.kv_latencies), sorted(self.local_latencies)
        return {
            "reads": self.reads,
            "failed": dict(self.failed),
            "during_restart": dict(self.during_restart),
            "expected": dict(self.expected),
            "served_after_doom": self.served_after_doom,
            "first_failures": [(round(at, 3), *rest) for at, *rest in self.first_failures],
            "p50_ms": percentile(every, 0.50) * 1e3,
            "p99_ms": percentile(every, 0.99) * 1e3,
            "max_ms": (every[-1] if every else 0.0) * 1e3,
            "kv_reads": len(kv),
            "kv_p50_ms": percentile(kv, 0.50) * 1e3,
            "kv_p99_ms": percentile(kv, 0.99) * 1e3,
            "local_p99_ms": percentile(local, 0.99) * 1e3,
        }


def _restart_windows(raw: Mapping[str, Any], records: Records) -> dict[tuple[int, str], list[tuple[float, float]]]:
    """The (from, to) spans whose failures are a restart's: for the socket callers (one channel), and for each of
    the app's Components (daprd keeps a connection per Component and redials each on its own schedule)."""
    socket_grace = RECONNECT_GRACE_MS / 1000
    windows: dict[tuple[int, str], list[tuple[float, float]]] = {(SOCKET, ""): []}
    ok = records.outcomes.get("OK")
    keys = {index: key for key, index in records.targets.items()}
    good: dict[str, list[float]] = {}
    for i in range(len(records.sent)):
        if records.source[i] == APP and records.outcome[i] == ok:
            good.setdefault(_group(APP, keys[records.target[i]]), []).append(records.sent[i])
    for restart in raw["restarts"]:
        windows[(SOCKET, "")].append((restart["killed"], restart["back"] + socket_grace))
        restart["app_back_after_s"] = {}
        for component, sent in sorted(good.items()):
            sent.sort()
            at = bisect.bisect_left(sent, restart["back"])
            first = sent[at] if at < len(sent) else raw["finished"]
            restart["app_back_after_s"][component] = first - restart["back"]
            windows.setdefault((APP, component), []).append(
                (restart["killed"], max(first, restart["back"] + socket_grace)))
    return windows


def _group(source: int, target: str) -> str:
    """Which restart window a read falls under: the socket callers share one; the app's, one per Component."""
    return target.split("/", 1)[0] if source == APP else ""


def _first_refusals(raw: Mapping[str, Any], records: Records) -> dict[int, float]:
    """For each doomed target (by id): when the first read refusing it with the right code was answered."""
    firsts: dict[int, float] = {}
    for key, (when, code) in raw["doomed"].items():
        target, wanted = records.targets.get(key), records.outcomes.get(code)
        if target is None or wanted is None:
            continue
        done = [records.sent[i] + records.took[i] for i in range(len(records.sent))
                if records.target[i] == target and records.outcome[i] == wanted and records.sent[i] >= when]
        if done:
            firsts[target] = min(done)
    return firsts


def tally(raw: dict[str, Any], records: Records) -> list[dict[int, Tally]]:
    """Per phase (in `raw["phases"]` order), per source, what its reads did."""
    phases = raw["phases"]
    starts = [phase["start"] for phase in phases]
    tallies: list[dict[int, Tally]] = [{SOCKET: Tally(), APP: Tally()} for _ in phases]
    names = {index: name for name, index in records.outcomes.items()}
    keys = {index: key for key, index in records.targets.items()}
    kv = {index for index, key in keys.items() if key.startswith("keyvault/")}
    windows = _restart_windows(raw, records)
    doomed = {records.targets[key]: (when, code) for key, (when, code) in raw["doomed"].items()
              if key in records.targets}
    refused = _first_refusals(raw, records)
    details = {(sent, target): detail for sent, _source, target, _outcome, detail in records.failures}
    refusals: dict[int, dict[str, Any]] = {
        target: {"first_refusal": None, "wrong": Counter(), "served_after": 0, "after_change": Counter()}
        for target in doomed}
    for i in range(len(records.sent)):
        sent = records.sent[i]
        at = bisect.bisect_right(starts, sent) - 1
        if at >= len(phases) or (at >= 0 and sent >= phases[at]["end"] and at == len(phases) - 1):
            continue  # sent while the soak was stopping
        counts = tallies[max(at, 0)][records.source[i]]
        outcome = names[records.outcome[i]]
        target = records.target[i]
        counts.reads += 1
        # In flight at some moment of a restart window: sent before its end, answered after the kill.
        done = sent + records.took[i]
        spans = windows.get((records.source[i], _group(records.source[i], keys[target])), [])
        if outcome != "OK" and any(sent <= hi and done >= lo for lo, hi in spans):
            counts.during_restart[outcome] += 1
            continue
        if target in doomed and sent >= doomed[target][0]:
            code = doomed[target][1]
            first = refused.get(target)
            refusals[target]["after_change"][outcome] += 1
            if outcome == code:
                counts.expected[outcome] += 1
            elif outcome == "OK" and first is not None and sent > first:
                counts.served_after_doom += 1
                refusals[target]["served_after"] += 1
            elif outcome != "OK":
                counts.failed[f"{outcome} (deleted/disabled name)"] += 1
                refusals[target]["wrong"][outcome] += 1
        elif outcome != "OK":
            counts.failed[outcome] += 1
            if len(counts.first_failures) < FIRST_FAILURES:
                counts.first_failures.append((sent - phases[max(at, 0)]["start"], outcome, keys[target],
                                              details.get((sent, keys[target]), "")))
        took = records.took[i]
        counts.latencies.append(took)
        if records.source[i] == SOCKET:
            (counts.kv_latencies if target in kv else counts.local_latencies).append(took)
    for target, entry in refusals.items():
        if target in refused:
            entry["first_refusal"] = refused[target] - doomed[target][0]
    raw_doomed = raw.setdefault("doomed_outcomes", {})
    for target, entry in refusals.items():
        raw_doomed[keys[target]] = {"code": doomed[target][1], "refused_after_s": entry["first_refusal"],
                                    "wrong_codes": dict(entry["wrong"]), "served_after_refusal": entry["served_after"],
                                    "reads_after_change": dict(entry["after_change"])}
    return tallies


def _rss(raw: Mapping[str, Any]) -> dict[str, Any]:
    """RSS over the second half of the run: one process's life (the restart is in the first cycle)."""
    phases = raw["phases"]
    begin, end = phases[0]["start"], phases[-1]["end"]
    half = begin + (end - begin) / 2
    restarts = [r["back"] for r in raw["restarts"] if r["back"] >= half]
    since = max([half, *restarts])
    samples = [(at, kib) for at, _pid, kib, _cpu in raw["rss"] if since <= at <= end]
    if len(samples) < 2:
        return {"samples": len(samples), "from": since - begin}
    n = max(1, min(RSS_SAMPLES, len(samples) // 4))
    first = statistics.median(kib for _, kib in samples[:n])
    last = statistics.median(kib for _, kib in samples[-n:])
    return {
        "samples": len(samples),
        "from_s": since - begin,
        "to_s": end - begin,
        "restart_in_second_half": bool(restarts),
        "start_mb": first * 1024 / 1e6,
        "end_mb": last * 1024 / 1e6,
        "max_mb": max(kib for _, kib in samples) * 1024 / 1e6,
        "growth": last / first - 1 if first else 0.0,
    }


def _examples(raw: Mapping[str, Any], records: Records, each: int = 3) -> dict[str, list[tuple[float, str, str]]]:
    """What the first few failures of each phase, source and code said: `<phase> / <source> / <code>` ->
    [(seconds into the phase, target, the error's text)]."""
    phases = raw["phases"]
    starts = [phase["start"] for phase in phases]
    found: dict[str, list[tuple[float, str, str]]] = {}
    for sent, source, target, outcome, detail in records.failures:
        at = max(bisect.bisect_right(starts, sent) - 1, 0)
        key = f"{phases[at]['kind']} / {'app' if source == APP else 'socket'} / {outcome}"
        kept = found.setdefault(key, [])
        if len(kept) < each:
            kept.append((round(sent - phases[at]["start"], 3), target, detail))
    return found


def _busy(raw: Mapping[str, Any], spans: list[tuple[float, float]]) -> dict[str, Any]:
    """Within `spans`: the machine's mean load average, and the share of one core serve used."""
    loads = [load for at, load in raw["load"] if any(lo <= at <= hi for lo, hi in spans)]
    used = seconds = 0.0
    for lo, hi in spans:
        inside = [(at, pid, cpu) for at, pid, _kib, cpu in raw["rss"] if lo <= at <= hi]
        for (a, pid_a, cpu_a), (b, pid_b, cpu_b) in itertools.pairwise(inside):
            if pid_a == pid_b:  # not across the restart
                used += cpu_b - cpu_a
                seconds += b - a
    return {"load": statistics.fmean(loads) if loads else None, "serve_cpu": used / seconds if seconds else None}


def _context(raw: Mapping[str, Any]) -> dict[str, Any]:
    """How busy the machine was: its load average over the phases, and the share of a core serve used."""
    begin, end = raw["phases"][0]["start"], raw["phases"][-1]["end"]
    loads = [load for at, load in raw["load"] if begin <= at <= end]
    cpu = 0.0
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for at, pid, _kib, used in raw["rss"]:
        if begin <= at <= end:
            by_pid.setdefault(pid, []).append((at, used))
    for samples in by_pid.values():
        cpu += samples[-1][1] - samples[0][1]
    return {
        "load_mean": statistics.fmean(loads) if loads else None,
        "load_max": max(loads, default=None),
        "serve_cpu_share": cpu / (end - begin) if end > begin else None,
    }


def analyse(raw: dict[str, Any], records: Records) -> dict[str, Any]:
    """Everything the report prints, JSON-able (the readers' records themselves are left out)."""
    per_phase = tally(raw, records)
    by_kind: dict[str, dict[int, Tally]] = {}
    vault: dict[str, Counter[str]] = {}
    tokens: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for phase, tallies in zip(raw["phases"], per_phase, strict=True):
        kind = phase["kind"]
        merged = by_kind.setdefault(kind, {SOCKET: Tally(), APP: Tally()})
        for source, counts in tallies.items():
            merged[source].merge(counts)
        vault.setdefault(kind, Counter()).update(phase["vault"])
        tokens[kind] += phase["token_requests"]
        seconds[kind] += phase["end"] - phase["start"]
        phase["socket"] = tallies[SOCKET].summary()
        phase["app"] = tallies[APP].summary()
    kinds = []
    for kind, merged in by_kind.items():
        spans = [(phase["start"], phase["end"]) for phase in raw["phases"] if phase["kind"] == kind]
        kinds.append({
            **_busy(raw, spans),
            "kind": kind,
            "phases": sum(1 for phase in raw["phases"] if phase["kind"] == kind),
            "seconds": seconds[kind],
            "socket": merged[SOCKET].summary(),
            "app": merged[APP].summary(),
            "vault": dict(vault[kind]),
            "token_requests": tokens[kind],
        })
    raw["kinds"] = kinds
    raw["rss_second_half"] = _rss(raw)
    raw["context"] = _context(raw)
    raw["machine"] = machine_facts()
    raw["reads"] = len(records.sent)
    raw["failure_examples"] = _examples(raw, records)
    raw["targets"] = [asdict(v) for v in verdicts(raw)]
    return raw


def _kind(raw: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    return next((k for k in raw["kinds"] if k["kind"] == kind), None)


def _noise_free(raw: Mapping[str, Any], kind: str) -> float | None:
    """(kv p99 / local p99) in the phases of `kind`, over the same in the steady phases."""
    steady, measured = _kind(raw, STEADY), _kind(raw, kind)
    if steady is None or measured is None:
        return None
    s, m = steady["socket"], measured["socket"]
    if not (s["local_p99_ms"] and m["local_p99_ms"] and s["kv_p99_ms"]):
        return None
    return (m["kv_p99_ms"] / m["local_p99_ms"]) / (s["kv_p99_ms"] / s["local_p99_ms"])


def verdicts(raw: Mapping[str, Any]) -> list[Verdict]:
    """PASS/FAIL per target (issue 21, point 6)."""
    found: list[Verdict] = []
    judged = [k for k in raw["kinds"] if k["kind"] != WARMUP]
    for source, label in (("socket", "the callers on the socket"), ("app", "the app through daprd")):
        if source == "app" and not raw["app_through_daprd"]:
            found.append(Verdict(f"no failed read after warm-up ({label})",
                                 f"not run: {raw['daprd_skipped'] or 'no daprd'}", False))
            continue
        failed: Counter[str] = Counter()
        for kind in judged:
            failed.update({f"{code} in {kind['kind']}": n for code, n in kind[source]["failed"].items()})
        reads = sum(kind[source]["reads"] for kind in judged)
        shown = ", ".join(f"{n} {what}" for what, n in failed.most_common(6)) or "none"
        found.append(Verdict(f"no failed read after warm-up ({label}), deleted/disabled names and the restart "
                             "window aside", f"{sum(failed.values())} of {reads:,} ({shown})", not failed))
    doomed = raw.get("doomed_outcomes", {})
    if doomed:
        refused = [d for d in doomed.values() if d["refused_after_s"] is not None]
        wrong = sum(sum(d["wrong_codes"].values()) for d in doomed.values())
        after = sum(d["served_after_refusal"] for d in doomed.values())
        slowest = max((d["refused_after_s"] for d in refused), default=0.0)
        found.append(Verdict(
            "deleted names fail NOT_FOUND, disabled ones FAILED_PRECONDITION, and are never served once refused",
            f"{len(refused)} of {len(doomed)} refused with the right code (at most {slowest:.2f} s after the change); "
            f"{wrong} other codes; {after} served after a refusal",
            len(refused) == len(doomed) and not wrong and not after,
        ))
    else:
        found.append(Verdict("deleted and disabled names fail with the right code", "no such phase ran", False))
    steady = _kind(raw, STEADY)
    base = steady["socket"]["kv_p99_ms"] if steady else 0.0
    for kind in FAULTS:
        measured = _kind(raw, kind)
        if measured is None:
            continue
        p99 = measured["socket"]["kv_p99_ms"]
        if kind == KILL:
            continue  # judged by the restart target below (its cache starts cold, by nature)
        ratio = p99 / base if base else float("inf")
        found.append(Verdict(
            f"p99 of keyvault reads during {kind} <= {TARGET_P99_RATIO:g}x steady",
            f"{p99:.1f} ms vs {base:.1f} ms ({ratio:.2f}x)", ratio <= TARGET_P99_RATIO,
        ))
    # The same, with the machine's noise taken out: keyvault's p99 over the file/containerapps reads' p99 of the
    # same phase (which no vault fault touches), against that ratio in the steady phases.
    noise_free = [(kind, ratio) for kind in FAULTS if kind != KILL and (ratio := _noise_free(raw, kind)) is not None]
    if noise_free:
        worst_kind, worst_ratio = max(noise_free, key=lambda item: item[1])
        found.append(Verdict(
            f"the same, the machine's noise taken out (keyvault p99 / the same phase's file+containerapps p99, "
            f"against steady's): <= {TARGET_P99_RATIO:g}x in every fault phase",
            f"worst {worst_ratio:.2f}x ({worst_kind}); " + ", ".join(f"{k} {r:.2f}x" for k, r in noise_free),
            worst_ratio <= TARGET_P99_RATIO,
        ))
    ttl = raw["settings"]["cache_ttl"]
    after = [r for r in raw["rotations"] if r["kind"] == "after the vault came back"]
    if after:
        delays = [r["served_after_s"] for r in after]
        missing = sum(1 for d in delays if d is None)
        slowest = max((d for d in delays if d is not None), default=0.0)
        limit = ttl + TARGET_ROTATION_SLACK_S
        found.append(Verdict(
            f"a rotation made during an outage is served within cacheTTL + {TARGET_ROTATION_SLACK_S:g} s "
            f"({limit:g} s) of the vault coming back",
            f"slowest {slowest:.2f} s of {len(after)}" + (f"; {missing} never served" if missing else ""),
            not missing and slowest <= limit,
        ))
    rss = raw["rss_second_half"]
    if "growth" in rss:
        found.append(Verdict(
            f"RSS over the second half grows < {TARGET_RSS_GROWTH:.0%}",
            f"{rss['start_mb']:.1f} -> {rss['end_mb']:.1f} MB ({rss['growth']:+.1%}; max {rss['max_mb']:.1f} MB, "
            f"{rss['samples']} samples)", rss["growth"] < TARGET_RSS_GROWTH,
        ))
    else:
        found.append(Verdict(f"RSS over the second half grows < {TARGET_RSS_GROWTH:.0%}",
                             f"too few samples ({rss.get('samples', 0)})", False))
    kill = _kind(raw, KILL)
    if kill is not None and raw["restarts"]:
        during = sum(kill["socket"]["during_restart"].values())
        after_back = sum(kill["socket"]["failed"].values())
        down = max(r["back"] - r["killed"] for r in raw["restarts"])
        found.append(Verdict(
            "kill -9: no socket read fails once the restarted server's socket answers (+ the callers' "
            f"longest reconnect backoff, {RECONNECT_GRACE_MS} ms)",
            f"{after_back} failed after; {during} failed during the restart (socket down {down:.2f} s)", not after_back,
        ))
    return found


# ---- the table ----------------------------------------------------------------------------------


def _codes(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {code}" for code, n in sorted(counts.items(), key=lambda item: -item[1])) or "0"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def _context_line(context: Mapping[str, Any]) -> str:
    if context["load_mean"] is None:
        return "machine load: not sampled"
    share = context["serve_cpu_share"]
    return (f"machine load average during the phases: mean {context['load_mean']:.1f}, max {context['load_max']:.1f} "
            "(others share this machine); serve used "
            + (f"{share:.0%} of one core" if share is not None else "an unknown share of a core"))


def render(raw: Mapping[str, Any]) -> str:
    settings = raw["settings"]
    machine = raw["machine"]
    steady = _kind(raw, STEADY)
    base = steady["socket"] if steady else None
    app_base = steady["app"] if steady else None
    lines = [
        f"secretbridge fault soak ({settings['name']}): {(raw['finished'] - raw['started']) / 60:.1f} min, "
        f"{len(raw['phases']) - 1} phases of {raw['phase_seconds']:.1f} s after a {settings['warmup_seconds']:g} s "
        f"warm-up; {raw['reads']:,} reads in all",
        f"machine: {machine['nproc']} CPUs ({machine.get('cpu_model', 'unknown CPU')}), Python {machine['python']}, "
        f"grpcio {machine.get('grpcio', '?')}; the vault double's thread "
        + ("at raised priority" if raw["vault_prioritised"] else "at normal priority"),
        f"one `secretbridge serve` ({settings['workers']} workers), instances keyvault ({settings['kv_names'] + 1} "
        f"secrets, HTTPS double, {settings['vault_latency'] * 1e3:g} ms a request), file and containerapps "
        f"({settings['local_names']} each); cacheTTL {settings['cache_ttl']:g} s, requestTimeout "
        f"{settings['request_timeout']:g} s, tokens live {settings['token_lifetime']} s",
        _context_line(raw["context"]),
        f"{settings['callers']} callers over the socket at {settings['rate']:g} reads/s in all, at random; "
        + (f"an app through daprd ({raw['daprd']}) at {settings['app_rate']:g} reads/s, {settings['app_callers']} "
           "in flight" if raw["app_through_daprd"] else f"no app through daprd ({raw['daprd_skipped']})"),
        "",
        "Callers on the socket, per phase (all cycles together): p50/p99 of every read, of the keyvault "
        "instance's (which the faults touch) and of the file and containerapps ones (which they do not: the "
        "machine's noise in that phase; 'noise out' = kv p99 / local p99, over steady's); vault requests (429s, "
        "5xx), token requests, serve's CPU (share of one core) and the machine's load average",
    ]
    header = ["phase", "n", "reads", "failed (by code)", "restart", "expected", "p50 ms", "p99 ms", "kv p99 ms",
              "kv p99 x steady", "local p99 ms", "noise out", "vault req", "429", "5xx", "tokens", "serve CPU", "load"]
    rows = []
    for kind in raw["kinds"]:
        s, v = kind["socket"], kind["vault"]
        rows.append([
            kind["kind"], str(kind["phases"]), f"{s['reads']:,}", _codes(s["failed"]),
            str(sum(s["during_restart"].values())), _codes(s["expected"]) if s["expected"] else "-",
            f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}", f"{s['kv_p99_ms']:.1f}",
            _ratio(s["kv_p99_ms"], base["kv_p99_ms"]) if base else "-",
            f"{s['local_p99_ms']:.1f}",
            f"{ratio:.2f}x" if (ratio := _noise_free(raw, kind["kind"])) is not None else "-",
            f"{v.get('total', 0) - v.get('challenge', 0):,}", f"{v.get('throttled', 0):,}", f"{v.get('failed', 0):,}",
            str(kind["token_requests"]),
            f"{kind['serve_cpu']:.0%}" if kind["serve_cpu"] is not None else "-",
            f"{kind['load']:.1f}" if kind["load"] is not None else "-",
        ])
    lines += _table(header, rows)
    if raw["app_through_daprd"]:
        lines += ["", "The app through daprd (HTTP GET /v1.0/secrets/<component>/<name>), per phase"]
        header = ["phase", "reads", "failed (by code)", "restart", "p50 ms", "p99 ms", "p99 x steady"]
        rows = []
        for kind in raw["kinds"]:
            a = kind["app"]
            rows.append([kind["kind"], f"{a['reads']:,}", _codes(a["failed"]), str(sum(a["during_restart"].values())),
                         f"{a['p50_ms']:.1f}", f"{a['p99_ms']:.1f}",
                         _ratio(a["p99_ms"], app_base["p99_ms"]) if app_base else "-"])
        lines += _table(header, rows)
    lines += ["", "Events"]
    for rotation in raw["rotations"]:
        served = rotation["served_after_s"]
        lines.append(f"  rotation, {rotation['kind']} (cycle {rotation['cycle'] + 1}): served "
                     + (f"{served:.2f} s after" if served is not None else "never, within the run"))
    for restart in raw["restarts"]:
        app = restart.get("app_back_after_s") or {}
        lines.append(f"  kill -9: the socket answered again {restart['back'] - restart['killed']:.2f} s after the kill"
                     + ("; the app's first good read through daprd after that: "
                        + ", ".join(f"{component} +{after:.2f} s" for component, after in app.items())
                        if raw["app_through_daprd"] and app else ""))
    for key, outcome in raw.get("doomed_outcomes", {}).items():
        refused = outcome["refused_after_s"]
        lines.append(f"  {key}: {outcome['code']} " + (f"{refused:.2f} s after the change" if refused is not None
                                                        else "never seen")
                     + f"; other codes {_codes(outcome['wrong_codes'])}; served after refusal "
                       f"{outcome['served_after_refusal']}")
    counted = [(phase, source, failure) for phase in raw["phases"] if phase["kind"] != WARMUP
               for source in ("socket", "app") for failure in phase[source]["first_failures"][:2]]
    if counted:
        lines += ["", "Failures counted (the first two of each phase and reader, seconds into the phase)"]
        for phase, source, (at, code, target, detail) in counted:
            lines.append(f"  {phase['kind']} (cycle {phase['cycle'] + 1}), {source}, +{at:.2f} s, {target}: {code}: "
                         f"{' '.join(detail.split())[:220]}")
        lines.append("")
    rss = raw["rss_second_half"]
    if "growth" in rss:
        lines.append(f"  RSS of serve from {rss['from_s']:.0f} s to {rss['to_s']:.0f} s: {rss['start_mb']:.1f} -> "
                     f"{rss['end_mb']:.1f} MB (max {rss['max_mb']:.1f} MB)")
    lines += [
        "",
        "How it is judged: a read belongs to the phase it was sent in. 'restart' = failed reads that were in "
        f"flight between the kill -9 and the restarted socket accepting (+{RECONNECT_GRACE_MS} ms, the callers' "
        "longest reconnect backoff with gRPC's jitter; for the app, until its first good read of each Component "
        "through daprd after that: "
        "daprd redials each on its own schedule); the kill phase's "
        "own p99 is not judged (its cache restarts cold). 'expected' = reads of a deleted (disabled) secret "
        "refused NOT_FOUND (FAILED_PRECONDITION) after the change; such a name may be served its held value "
        "until the first refusal, never after.",
        "",
        "Targets (issue 21, point 6)",
    ]
    for verdict in raw["targets"]:
        mark = "PASS" if verdict["passed"] else "FAIL"
        lines.append(f"  {mark}  {verdict['target']}: {verdict['measured']}")
    return "\n".join(lines)

