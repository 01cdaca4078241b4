"""`python -m bench.soak`: run the fault soak, print its table, write bench/results/soak.json.

Exit status: 0 whatever the targets say (they are reported, not enforced: the machines are
noisy); 1 only when the soak could not run, so a broken harness is noticed
(tests/test_soak_smoke.py runs `--smoke`).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from bench.daprd import find_daprd
from bench.soak import analysis, run

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "results" / "soak.json"


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C: every child is stopped and the temp folder removed on the way out.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description="secretbridge fault soak (issue 21)")
    parser.add_argument("--minutes", type=float, default=None, help="length of the run (default 10)")
    parser.add_argument("--phase-seconds", type=float, default=None,
                        help="length of one phase (default 20; shorter when one cycle would not fit)")
    parser.add_argument("--smoke", action="store_true", help="seconds-long phases: proves the harness, judges nothing")
    parser.add_argument("--daprd", type=Path, default=None,
                        help="the daprd binary (default: what tools/daprd/get_daprd.py finds)")
    parser.add_argument("--no-daprd", action="store_true", help="no app through daprd")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    settings = run.SMOKE if args.smoke else run.FULL
    if args.minutes is not None:
        settings = replace(settings, minutes=args.minutes)
    if args.phase_seconds is not None:
        settings = replace(settings, phase_seconds=args.phase_seconds)
    daprd: Path | None = None
    why = "--no-daprd"
    if not args.no_daprd:
        daprd = args.daprd
        if daprd is None:
            daprd, why = find_daprd()  # never built here: `make soak` builds it first
            if daprd is None:
                print(f"no daprd, the app through daprd is left out: {why}", file=sys.stderr)
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        result = run.run(settings, daprd, why)
    except Exception:
        traceback.print_exc()
        return 1
    print(analysis.render(result), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nresults written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
