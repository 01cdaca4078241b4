"""Logging set-up: JSON lines for machines, plain text on a terminal.

Context goes in `extra={...}` fields (instance, backend, secret name, cause),
never a secret value: callers pass names and error classes, not data.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Readable lines for a person at a terminal, extras as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        return f"{line}  {extras}" if extras else line


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Send secretbridge's logs to stderr as JSON (or text on a terminal)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The Azure SDK logs request headers at INFO in some versions; keep it to warnings.
    logging.getLogger("azure").setLevel(logging.WARNING)


def safe_traceback(error: BaseException) -> str:
    """Where a bug happened, fit for a log line: each exception in the chain with its stack and its
    class, never its text (a bug's message may quote the very value it mishandled)."""
    chain: list[traceback.TracebackException] = []
    current: traceback.TracebackException | None = traceback.TracebackException.from_exception(error)
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    parts = []
    for link in reversed(chain):
        name = getattr(link.exc_type, "__qualname__", "Exception")
        parts.append("Traceback (most recent call last):\n" + "".join(link.stack.format()) + f"{name}\n")
    return "\nThe above led to:\n\n".join(parts)
