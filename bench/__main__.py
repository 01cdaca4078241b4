"""`python -m bench`: run the scenarios, print the table, write bench/results/latest.json.

Exit status: 0 whatever the targets say (they are reported, not enforced: the
machines are noisy); 1 only when a scenario could not run at all, so a broken
harness is noticed (tests/test_bench_smoke.py runs `--smoke`).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import report, scenarios

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="secretbridge benchmarks (issue 5, item 8)")
    parser.add_argument("--smoke", action="store_true", help="tiny and fast: proves the harness, measures nothing")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument(
        "--only", default=",".join(scenarios.SECTIONS),
        help="comma-separated sections to run (default: all of " + ", ".join(scenarios.SECTIONS) + ")",
    )
    args = parser.parse_args(argv)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in scenarios.SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    settings = scenarios.SMOKE if args.smoke else scenarios.FULL

    started = time.monotonic()
    sections: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with scenarios.Context.open() as ctx:
        for name in wanted:
            print(f"running {report.SECTION_TITLES[name]} ...", file=sys.stderr, flush=True)
            try:
                sections[name] = scenarios.SECTIONS[name](ctx, settings)
            except Exception as err:
                # One broken scenario must not hide the others' numbers.
                traceback.print_exc()
                errors[name] = f"{type(err).__name__}: {err}"
    result = report.build(asdict(settings), sections, errors, time.monotonic() - started)
    print(report.render(result), flush=True)
    report.write_json(result, args.out)
    print(f"\nresults written to {args.out}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
