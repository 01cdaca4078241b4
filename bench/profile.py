"""Where a server's time goes under load: py-spy samples it (from outside, no change to the process)
while a load runs, and the samples are summed by where the running frame is.

py-spy is optional (`pip install py-spy`, into the venv beside `python`); without it a profile says so.
Only samples of the thread holding the GIL are kept (`--gil`): with one GIL, that thread is what the
process is doing; a worker waiting for the GIL or for a call is not time spent. `--native` is not
used: time inside grpc's C core shows as the Python frame that called into it (mostly grpc's own
`_server.py`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Where a frame's file lies → the part of the server it belongs to (the first that matches).
PARTS = (
    ("secretbridge/", "secretbridge's code"),
    ("grpc/", "grpc's Python layer (and the C core under it)"),
    ("google/protobuf", "protobuf"),
    ("threading.py", "thread pool and locks"),
    ("concurrent/futures", "thread pool and locks"),
    ("bench/servers.py", "the echo's handler"),
)
OTHER = "other (stdlib, logging, metrics)"


def py_spy() -> str | None:
    """py-spy on PATH or beside this interpreter."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def record(pid: int, out: Path, load: Callable[[], Any], seconds: int) -> dict[str, Any]:
    """Sample `pid` for `seconds` while `load()` runs; the summary (or why there is none)."""
    spy = py_spy()
    if spy is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    proc = subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--duration", str(seconds + 1), "--rate", "400", "--format", "raw",
         "--gil", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    time.sleep(0.5)  # attached before the load starts
    result = load()
    try:
        _, err = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if not out.exists():
        return {"skipped": f"py-spy failed ({proc.returncode}): {err.decode(errors='replace').strip()[-300:]}"}
    return {"load": {k: result[k] for k in ("throughput", "p50_ms", "cpu_us_per_call")}, **summarize(out)}


def _frame(text: str) -> tuple[str, str]:
    """`func (path/to/file.py:12)` → (function, file)."""
    name, _, where = text.rpartition(" (")
    return (name or text), where.rsplit(":", 1)[0]


def _part(path: str) -> str:
    return next((part for marker, part in PARTS if marker in path), OTHER)


def summarize(raw: Path, top: int = 8) -> dict[str, Any]:
    """Shares of the samples: by part (where the running frame is), the leaf functions, and the share
    with any of secretbridge's frames on the stack (its code and what it calls)."""
    parts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    inside = 0
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")[1:]]  # the first is the thread
        if not frames:
            continue
        name, path = frames[-1]
        parts[_part(path)] += n
        leaves[f"{name} ({Path(path).name})"] += n
        inside += n if any("secretbridge/" in p for _, p in frames) else 0
        total += n

    def share(n: int) -> float:
        return n / total if total else 0.0

    return {
        "samples": total,
        "parts": {part: share(n) for part, n in parts.most_common()},
        "top": [(name, share(n)) for name, n in leaves.most_common(top)],
        "secretbridge_inclusive": share(inside),
    }
