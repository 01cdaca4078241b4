"""Shared fixtures. `bridge` is a real secretbridge server on a real Unix socket; `e2e_stack`
(tests/stack.py) starts `secretbridge serve` behind a runtime (the gateway, later daprd) as processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stack import e2e_stack  # noqa: F401 - the end-to-end stack fixture, for every test file
from tests.support import Bridge, serve_bridge


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    """An in-process secretbridge on its own socket; `bridge.init(...)`, `bridge.get(...)`, ..."""
    with serve_bridge() as b:
        yield b
