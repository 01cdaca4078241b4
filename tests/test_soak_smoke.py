"""The fault soak's harness still runs end to end and cleans up (`python -m bench.soak --smoke`).

Phases of a second or two prove the harness, not secretbridge: no target's verdict is asserted
here (the outage behaviour has its own tests), only that every phase ran and was read, the table
and one verdict per target were printed, and nothing the soak started outlives it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak.run import FIRST_CYCLE, KILL, WARMUP

REPO_ROOT = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(120)
def test_smoke_soak_runs_every_phase_prints_the_table_and_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--smoke", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=110, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    result = json.loads(out.read_text())

    assert [phase["kind"] for phase in result["phases"]] == [WARMUP, *FIRST_CYCLE]
    assert all(phase["socket"]["reads"] > 0 for phase in result["phases"])
    # The kill phase really killed and restarted the server, and the readers read again after it.
    assert len(result["restarts"]) == 1 and len(result["pids"]) >= 3
    kill = next(phase for phase in result["phases"] if phase["kind"] == KILL)
    assert kill["events"]["back"] > kill["events"]["killed"]
    assert result["rotations"] and result["doomed"]

    text = done.stdout
    for kind in (WARMUP, *FIRST_CYCLE):
        assert kind in text
    assert "Targets (issue 21, point 6)" in text
    assert text.count("  PASS  ") + text.count("  FAIL  ") == len(result["targets"]) >= 10
    if result["app_through_daprd"]:  # needs a daprd (make daprd); the soak says why it ran without one
        assert "The app through daprd" in text
        assert sum(phase["app"]["reads"] for phase in result["phases"]) > 0

    # Self-stopping: every process it started is gone, its temp folder removed.
    assert [pid for pid in result["pids"] if _alive(pid)] == []
    assert not Path(result["folder"]).exists()
