"""What users read and copy stays true: the metadata reference and every shipped Component YAML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from secretbridge.tools.check import check_paths

ROOT = Path(__file__).resolve().parent.parent


def test_the_metadata_reference_matches_the_declarations() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "secretbridge", "backends", "--markdown"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    assert (ROOT / "docs" / "metadata.md").read_text() == generated, "docs/metadata.md is stale: run make docs"


SHIPPED = sorted({p.parent for p in [*ROOT.glob("components/**/*.yaml"), *ROOT.glob("deploy/**/*.yaml")]})


def test_every_shipped_component_is_valid_metadata_for_its_backend() -> None:
    findings = check_paths(SHIPPED)
    assert len(findings) >= 4, [f.source for f in findings]
    for finding in findings:
        assert not finding.errors and not finding.warnings, (finding.source, finding.errors, finding.warnings)


def test_check_names_the_property_and_fails(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        """apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: vault}
spec:
  type: secretstores.secretbridge
  version: v1
  metadata:
    - {name: backend, value: keyvault}
    - {name: vaultName, value: kv-prod}
    - {name: cacheTTL, value: half a minute}
    - {name: azureClientSecret, secretKeyRef: {name: sp-secret, key: sp-secret}}
    - {name: cacheTtl2, value: x}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: other}
spec: {type: state.redis, version: v1, metadata: []}
"""
    )
    run = subprocess.run(
        [sys.executable, "-m", "secretbridge", "check", str(tmp_path)], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 1
    assert "FAIL" in run.stdout and "'cacheTTL' must be a duration" in run.stdout
    assert "state.redis" not in run.stdout and "other" not in run.stdout
    fixed = (tmp_path / "bad.yaml").read_text().replace("value: half a minute}", "value: 30}")  # bare seconds
    (tmp_path / "bad.yaml").write_text(fixed)
    run = subprocess.run(
        [sys.executable, "-m", "secretbridge", "check", str(tmp_path)], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 0, run.stdout
    assert "unknown metadata property 'cacheTtl2'" in run.stdout
