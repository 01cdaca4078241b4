"""What a platform team adopts besides the code: one version, a licence, the image's locked dependencies."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_comes_from_pyproject() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "secretbridge", "--version"], check=True, capture_output=True, text=True, cwd=ROOT
    )
    assert run.stdout.strip() == f"secretbridge {PYPROJECT['project']['version']}"
