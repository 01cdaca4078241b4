"""tools/daprd/compat.py (`make compat`): how a run's results become the matrix table, without running it
(`make compat` builds every release and runs the daprd suites under each: minutes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "daprd" / "compat.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compat", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["compat"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


compat = _load()

REPORT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_a" name="test_ok" />
<testcase classname="tests.test_a" name="test_broken"><failure message="boom" /></testcase>
<testcase classname="tests.test_b" name="test_setup"><error message="fixture" /></testcase>
<testcase classname="tests.test_b" name="test_later"><skipped message="off before 1.18" /></testcase>
</testsuite></testsuites>"""


def test_a_junit_report_becomes_one_outcome_per_test_errors_counting_as_failures(tmp_path: Path) -> None:
    (tmp_path / "r.xml").write_text(REPORT)
    assert compat.outcomes(tmp_path / "r.xml") == {
        "tests.test_a::test_ok": "passed", "tests.test_a::test_broken": "failed",
        "tests.test_b::test_setup": "failed", "tests.test_b::test_later": "skipped",
    }


def test_the_table_counts_each_release_and_names_what_differs_from_the_pin() -> None:
    pin = compat.Row("1.18.2", pinned=True, outcomes={"t::a": "passed", "t::b": "passed"})
    older = compat.Row("1.16.5", outcomes={"t::a": "passed", "t::b": "skipped"})
    same = compat.Row("1.16.4", outcomes=dict(pin.outcomes))
    broken = compat.Row("1.15.0", problem="not built: the Go module proxy refused x@v1: 403 Forbidden")
    lines = compat.table([pin, older, same, broken]).splitlines()
    assert lines[0].split("|")[1].strip() == "daprd" and "what differs from the pin" in lines[0]
    assert [c.strip() for c in lines[2].split("|")[1:5]] == ["1.18.2", "2", "0", "0"]
    assert "(the pin" in lines[2]
    assert [c.strip() for c in lines[3].split("|")[1:5]] == ["1.16.5", "1", "0", "1"]
    assert "t::b: passed -> skipped" in lines[3]
    assert lines[4].rstrip(" |").endswith("nothing")
    assert "not built: the Go module proxy refused x@v1: 403 Forbidden" in lines[5]
    assert pin.green and older.green and not broken.green
    assert not compat.Row("x", outcomes={"t::a": "failed"}).green
