#!/usr/bin/env python3
"""`make compat`: the daprd suites under every daprd release this project builds, as one table.

The releases are get_daprd.py's (:func:`get_daprd.releases`: the pin, then each folder under
tools/daprd/releases/). Each is found or built (once per machine, shared cache), then the suites that run the
real daprd (:data:`SUITES`) run under it in a pytest of their own with ``DAPRD`` naming that binary. The table
says, per release, how many tests passed, failed and were skipped, and which tests ended differently from the
pin (the release ``make test`` runs). Exit status 0 only when every release built and passed everything.

Run from the repository root with the project's virtual environment: ``.venv/bin/python tools/daprd/compat.py``
(``make compat`` does). ``--release VERSION`` (repeatable) limits the run; ``-k EXPR`` is passed to pytest.
Standard library only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import get_daprd  # a sibling script, not a package

REPO = Path(__file__).resolve().parents[2]
#: The suites that put the real daprd between an app and secretbridge: what a daprd release can change.
SUITES = ("tests/test_e2e_*.py", "tests/test_daprd_restart.py", "tests/test_daprd_limits.py",
          "tests/test_differential.py", "tests/test_gateway_parity.py")
#: How many test names "what differs" lists before it counts the rest.
SHOWN = 4


@dataclass
class Row:
    """One release's run: its outcome per test, or why it could not run."""

    version: str
    pinned: bool = False
    outcomes: dict[str, str] = field(default_factory=dict)
    problem: str = ""
    seconds: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(1 for value in self.outcomes.values() if value == outcome)

    @property
    def green(self) -> bool:
        return not self.problem and self.count("failed") == 0 and bool(self.outcomes)


def suite_files() -> list[str]:
    """SUITES with their globs expanded, relative to the repository root."""
    files: list[str] = []
    for pattern in SUITES:
        files += sorted(str(path.relative_to(REPO)) for path in REPO.glob(pattern))
    return files


def run_release(version: str, pytest_args: Sequence[str]) -> Row:
    """Find or build daprd ``version``, then run the suites under it."""
    row = Row(version, pinned=get_daprd.release(version).pinned)
    try:
        binary = get_daprd.find_daprd(version=version)
    except get_daprd.DaprdError as err:
        row.problem = f"not built: {err}"
        return row
    print(f"compat: daprd {version}: running the daprd suites ({binary})", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="secretbridge-compat-") as tmp:
        report = Path(tmp) / "junit.xml"
        env = dict(os.environ, DAPRD=str(binary))
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
             *pytest_args, *suite_files()],
            cwd=REPO, env=env, check=False,
        )
        row.seconds = time.monotonic() - started
        if not report.is_file():
            row.problem = f"pytest exited with {done.returncode} before reporting"
            return row
        row.outcomes = outcomes(report)
    return row


def outcomes(report: Path) -> dict[str, str]:
    """Each test of a JUnit XML report (``file::name``) → passed, failed or skipped (errors count as failed)."""
    found: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            found[name] = "failed"
        elif case.find("skipped") is not None:
            found[name] = "skipped"
        else:
            found[name] = "passed"
    return found


def differences(row: Row, baseline: Row) -> str:
    """Which tests ended otherwise under ``row`` than under ``baseline`` (the pin), in a few words."""
    if row.problem:
        return row.problem
    if row is baseline:
        said = "the pin: the release `make test` runs" if row.pinned else "the first row, compared with below"
        return f"({said})" + _failures(row)
    changed = sorted(name for name in set(row.outcomes) | set(baseline.outcomes)
                     if row.outcomes.get(name) != baseline.outcomes.get(name))
    if not changed:
        return "nothing"
    shown = [f"{name.rsplit('.', 1)[-1]}: {baseline.outcomes.get(name, 'absent')} -> "
             f"{row.outcomes.get(name, 'absent')}" for name in changed[:SHOWN]]
    more = f"; and {len(changed) - SHOWN} more" if len(changed) > SHOWN else ""
    return "; ".join(shown) + more


def _failures(row: Row) -> str:
    failed = sorted(name.rsplit(".", 1)[-1] for name, value in row.outcomes.items() if value == "failed")
    if not failed:
        return ""
    more = f" and {len(failed) - SHOWN} more" if len(failed) > SHOWN else ""
    return "; failed: " + ", ".join(failed[:SHOWN]) + more


def table(rows: Sequence[Row]) -> str:
    """The matrix as a Markdown table (readable as plain text too)."""
    header = ("daprd", "passed", "failed", "skipped", "minutes", "what differs from the pin")
    body = [
        (row.version, str(row.count("passed")), str(row.count("failed")), str(row.count("skipped")),
         f"{row.seconds / 60:.1f}", differences(row, rows[0]))
        for row in rows
    ]
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header) - 1)]

    def render(cells: Sequence[str]) -> str:
        return "| " + " | ".join([*(c.ljust(w) for c, w in zip(cells, widths, strict=False)), cells[-1]]) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|---|"
    return "\n".join([render(header), rule, *(render(line) for line in body)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", action="append", metavar="VERSION", help="only this release (repeatable)")
    parser.add_argument("-k", metavar="EXPR", help="passed to pytest: only tests matching EXPR")
    args = parser.parse_args(argv)
    try:
        releases = [r.version for r in get_daprd.releases()]
        chosen = [get_daprd.release(v).version for v in args.release] if args.release else releases
    except get_daprd.DaprdError as err:
        print(f"compat: {err}", file=sys.stderr)
        return 1
    pytest_args = ["-k", args.k] if args.k else []
    # The pin runs first: it is the baseline every other row is compared with.
    rows = [run_release(version, pytest_args) for version in sorted(chosen, key=releases.index)]
    print()
    print(table(rows))
    return 0 if all(row.green for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
