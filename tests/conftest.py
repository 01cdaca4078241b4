"""Shared fixtures. `bridge` is a real secretbridge server on a real Unix socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Bridge, serve_bridge


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    """An in-process secretbridge on its own socket; `bridge.init(...)`, `bridge.get(...)`, ..."""
    with serve_bridge() as b:
        yield b
