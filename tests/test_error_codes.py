"""What daprd sees when a call fails: the status code of each error class, the loop's own timeout, and a
bug's error, whose text (it may hold a value) never reaches the message or the log.

A real server on a real socket serves a real file Component; a test swaps the store's `get` for one
that fails the way it needs, so each error path of the server is driven on purpose.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from secretbridge.backends.file import FileStore
from secretbridge.core import errors
from secretbridge.core.logs import JsonFormatter
from secretbridge.runtime import instances

from tests.fakes import FakeKeyVault, vault_metadata
from tests.support import Bridge

pytest_plugins = ("tests.fakes.fixtures",)

VALUE = "planted-secret-VALUE-9f1c"


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The process's log as `serve` writes it (JSON lines), captured."""
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield sink
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def init_file(bridge: Bridge, tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps({"db": VALUE}))
    bridge.init({"backend": "file", "secretsFile": str(tmp_path / "s.json")})


def to_the_loop(self: FileStore, name: str, version: str | None = None, view: object = None) -> None:
    """No answer from memory: the Get goes to the asyncio loop, where the patched `get` fails."""
    return None


def failure(bridge: Bridge, name: str = "db") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        bridge.get(name)
    return err.value


# Written out, not read from the server's table: a wrong entry there must fail here.
CODES = [
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]


@pytest.mark.parametrize(("error", "code"), CODES, ids=[c.__name__ for c, _ in CODES])
def test_each_error_reaches_daprd_with_its_own_code(
    error: type[errors.SecretStoreError], code: grpc.StatusCode, bridge: Bridge, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    init_file(bridge, tmp_path)

    async def fails(self: FileStore, name: str, version: str | None = None, view: object = None) -> dict[str, str]:
        raise error(f"the cause, naming secret {name!r}")

    monkeypatch.setattr(FileStore, "get", fails)
    monkeypatch.setattr(FileStore, "read_now", to_the_loop)
    err = failure(bridge)
    assert err.code() == code
    assert err.details() == "Get on instance 'default' (file): the cause, naming secret 'db'"


def test_a_slow_vault_is_deadline_exceeded_not_unavailable(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_secret("slow", "v")
    bridge.init({"backend": "keyvault", "maxRetries": "0", **vault_metadata(fake_vault, requestTimeout="300ms")})
    fake_vault.set_latency(30)
    err = failure(bridge, "slow")
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.details()
    assert "requestTimeout" in err.details()


def test_a_call_the_loop_gives_up_on_is_deadline_exceeded(
    bridge: Bridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_file(bridge, tmp_path)

    async def hangs(self: FileStore, name: str, version: str | None = None, view: object = None) -> dict[str, str]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(FileStore, "get", hangs)
    monkeypatch.setattr(FileStore, "read_now", to_the_loop)
    monkeypatch.setattr(instances, "LOCAL_TIMEOUT", 0.3)
    err = failure(bridge)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.details()
    assert err.details() == "Get on instance 'default' (file): the call took too long and was abandoned"


def test_a_bugs_error_text_reaches_neither_the_message_nor_the_log(
    bridge: Bridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_log: io.StringIO
) -> None:
    init_file(bridge, tmp_path)

    async def breaks(self: FileStore, name: str, version: str | None = None, view: object = None) -> dict[str, str]:
        data = (await self._current())[name]
        raise KeyError(f"lost track of {data}")  # a bug whose text holds the value

    monkeypatch.setattr(FileStore, "get", breaks)
    monkeypatch.setattr(FileStore, "read_now", to_the_loop)
    err = failure(bridge)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "Get on instance 'default' (file): unexpected KeyError; this is a bug in secretbridge"
    logged = json_log.getvalue()
    assert "unexpected error (a bug in secretbridge)" in logged and '"error_type": "KeyError"' in logged
    assert VALUE not in logged


def test_a_get_whose_bytes_are_not_a_request_is_invalid_argument_and_the_next_is_served(
    bridge: Bridge, tmp_path: Path
) -> None:
    init_file(bridge, tmp_path)
    assert bridge.get("db") == {"db": VALUE}
    raw = bridge.channel.unary_unary("/dapr.proto.components.v1.SecretStore/Get")
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\x0a\xff\x01db", metadata=[("x-component-instance", "default")], timeout=10)  # a key cut short
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        "Get on instance 'default' (file): the request is not a GetSecretRequest (it could not be parsed)"
    )
    assert bridge.get("db") == {"db": VALUE}
