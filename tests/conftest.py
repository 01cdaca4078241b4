"""Shared fixtures. `bridge` is a real secretbridge server on a real Unix socket (its operator
allows the fakes' host, 127.0.0.1); `strict_bridge` is one whose operator allowed nothing more;
`e2e_stack` (tests/stack.py) starts `secretbridge serve` behind a runtime (daprd or the gateway)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from secretbridge.core.policy import STRICT

from tests.stack import e2e_stack  # noqa: F401 - the end-to-end stack fixture, for every test file
from tests.support import Bridge, serve_bridge


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    """An in-process secretbridge on its own socket; `bridge.init(...)`, `bridge.get(...)`, ..."""
    with serve_bridge() as b:
        yield b


@pytest.fixture
def strict_bridge() -> Iterator[Bridge]:
    """A secretbridge whose operator allowed nothing beyond Azure (no `--allow-vault-host`)."""
    with serve_bridge(policy=STRICT) as b:
        yield b
