"""What users read and copy stays true: the metadata reference and every shipped Component YAML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from secretbridge import stores
from secretbridge.instances import properties_for
from secretbridge.metadata import parse_metadata

ROOT = Path(__file__).resolve().parent.parent


def test_the_metadata_reference_matches_the_declarations() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "secretbridge", "backends", "--markdown"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    assert (ROOT / "docs" / "metadata.md").read_text() == generated, "docs/metadata.md is stale: run make docs"


def _components() -> list[tuple[Path, dict]]:  # type: ignore[type-arg]
    found = []
    for path in sorted([*ROOT.glob("components/**/*.yaml"), *ROOT.glob("deploy/**/*.yaml")]):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "Component":
                found.append((path, document))
    return found


@pytest.mark.parametrize(("path", "component"), _components(), ids=lambda v: str(v)[-40:])
def test_every_shipped_component_is_valid_metadata_for_its_backend(path: Path, component: dict) -> None:  # type: ignore[type-arg]
    spec = component["spec"]
    assert spec["type"] == "secretstores.secretbridge" and spec["version"] == "v1"
    raw = {item["name"]: str(item.get("value", "")) for item in spec["metadata"]}
    cls = stores.store_class(raw["backend"])
    parsed = parse_metadata(properties_for(cls), raw)
    assert not parsed.unknown, f"{path}: unknown properties {parsed.unknown}"
