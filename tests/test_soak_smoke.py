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
from typing import Any

import pytest

from bench.soak.analysis import tally
from bench.soak.callers import SOCKET, Records
from bench.soak.run import DOOM, FIRST_CYCLE, KILL, WARMUP

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


def _phase(kind: str, start: float, end: float) -> dict[str, object]:
    return {"kind": kind, "cycle": 0, "start": start, "end": end, "vault": {}, "token_requests": 0, "events": {}}


def test_the_soak_judges_restarts_and_deleted_secrets_by_its_stated_rules() -> None:
    """A read in flight at the kill is the restart's, one after the socket is back a failure; a deleted
    secret may be served until its first refusal, never after it, and only with the right code."""
    records = Records()
    records.add(1.0, 0.001, SOCKET, "keyvault/a", "OK")
    records.add(9.8, 0.5, SOCKET, "keyvault/a", "UNAVAILABLE")  # sent before the kill, failed by it
    records.add(10.5, 0.001, SOCKET, "keyvault/a", "UNAVAILABLE")  # while down
    records.add(12.5, 0.001, SOCKET, "keyvault/a", "UNAVAILABLE")  # after the socket was back: a failure
    records.add(20.5, 0.001, SOCKET, "keyvault/gone", "OK")  # held value before the refusal: fine
    records.add(21.0, 0.010, SOCKET, "keyvault/gone", "NOT_FOUND")  # the refusal
    records.add(22.0, 0.001, SOCKET, "keyvault/gone", "OK")  # served again after it: counted
    records.add(23.0, 0.001, SOCKET, "keyvault/gone", "UNAVAILABLE")  # the wrong code: counted
    raw: dict[str, Any] = {
        "phases": [_phase(WARMUP, 0.0, 5.0), _phase(KILL, 5.0, 15.0), _phase(DOOM, 20.0, 30.0)],
        "restarts": [{"killed": 10.0, "back": 12.0}],
        "doomed": {"keyvault/gone": [20.0, "NOT_FOUND"]},
        "finished": 30.0,
    }
    kill, doom = (t[SOCKET] for t in tally(raw, records)[1:])
    assert kill.during_restart == {"UNAVAILABLE": 2} and kill.failed == {"UNAVAILABLE": 1}
    assert doom.expected == {"NOT_FOUND": 1} and doom.served_after_doom == 1
    assert doom.failed == {"UNAVAILABLE (deleted/disabled name)": 1}
    assert raw["doomed_outcomes"]["keyvault/gone"]["refused_after_s"] == pytest.approx(1.01)
