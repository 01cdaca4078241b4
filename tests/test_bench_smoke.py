"""The benchmark harness still runs end to end (`python -m bench --smoke`).

Timings are never asserted (machines are noisy, and smoke mode measures nothing
worth reading): only that every section of the report is produced, so the
harness cannot rot between `make bench` runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(220)
def test_smoke_run_produces_every_section(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=210, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert set(report["sections"]) == {
        "cached_get", "bulk_get", "hot_reads", "memory", "bulkhead", "fleet", "limited_bulk", "side_by_side",
        "through_daprd", "handler"}

    cached = report["sections"]["cached_get"]
    assert [level["inflight"] for level in cached["levels"]] == [1, 16, 64]
    for level in cached["levels"]:
        labels = {r["label"] for r in level["results"]}
        assert {"echo aio", "echo threaded (4 workers)", "echo threaded (16 workers)",
                "secretbridge threaded (64 workers)", "secretbridge threaded (4 workers)",
                "secretbridge aio (bench variant)",
                "secretbridge file (64 workers)", "secretbridge containerapps (64 workers)"} <= labels
        assert all(r["calls"] > 0 and not r["errors"] for r in level["results"])
    assert cached["vault_reads_during_load"] == 0  # the load saw cache hits only

    bulk = report["sections"]["bulk_get"]
    assert {run["bulkConcurrency"] for run in bulk["runs"]} == {16, 32, 64}
    assert all(run["secrets"] == bulk["secrets"] for run in bulk["runs"])
    hot = report["sections"]["hot_reads"]
    assert hot["app_reads_ok"] == hot["reads"]
    memory = report["sections"]["memory"]
    assert {run["primed_by"] for run in memory["runs"]} == {"get", "bulk"}
    bulkhead = report["sections"]["bulkhead"]
    assert bulkhead["alone"]["calls"] > 0 and bulkhead["loaded"]["calls"] > 0
    assert not bulkhead["alone"]["errors"] and not bulkhead["loaded"]["errors"]

    fleet = report["sections"]["fleet"]
    assert [m["mode"] for m in fleet["modes"]] == [
        "no cache (the built-in store's behaviour)", "TTL cache", "TTL cache + change detection"]
    assert all(m["app_reads_total"] > 0 and not m["errors"] for m in fleet["modes"])
    limited = report["sections"]["limited_bulk"]
    assert limited["failed"] == {} and limited["complete"] == limited["instances"]

    side = report["sections"]["side_by_side"]
    if "skipped" not in side:  # needs root and a daprd (tools/daprd/get_daprd.py); it says why otherwise
        for store in side["stores"].values():
            assert store["bulk_status"] == 200 and store["bulk_secrets"] == side["secrets"]
            assert all(level["calls"] > 0 and not level["errors"] for level in store["levels"])

    through = report["sections"]["through_daprd"]
    if "skipped" not in through:  # needs a daprd; it says why otherwise
        assert [level["inflight"] for level in through["levels"]] == [1, 16, 64]
        for level in through["levels"]:
            assert {r["label"] for r in level["results"]} == {
                "built-in local.file", "echo threaded (4 workers)", "secretbridge file",
                "secretbridge containerapps", "secretbridge keyvault (cached)"}
            assert all(r["calls"] > 0 and not r["errors"] for r in level["results"])
        assert through["vault_reads_during_load"] == 0  # cached keyvault: hits only

    handler = report["sections"]["handler"]
    assert [r["label"] for r in handler["results"]] == [
        "echo (threaded)", "secretbridge file", "secretbridge containerapps", "secretbridge keyvault (cached)"]
    assert all(r["us_per_get"] > 0 and r["us_per_get_threads"] > 0 for r in handler["results"])

    # One verdict per target: three backends at three in-flight levels, BulkGet, hot reads, RSS,
    # the fleet's ordering, the limited BulkGets; and through daprd, one per level.
    targets = 14 + (0 if "skipped" in through else 3)
    assert len(report["targets"]) == targets
    text = done.stdout
    for heading in ("(a) Cached Get", "(b) BulkGet", "(c) ", "(d) RSS", "(e) bulkhead", "(f) ", "(g) ", "(h) ", "(i) ",
                    "(j) ", "serving model",
                    "Targets"):
        assert heading in text
    assert text.count("PASS") + text.count("FAIL") == targets
