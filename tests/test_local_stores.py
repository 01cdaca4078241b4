"""The `file` and `env` backends, through the socket as daprd uses them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc
import pytest
from secretbridge.backends import COMMON_PROPERTIES
from secretbridge.backends.file import FileStore
from secretbridge.core.errors import NotFound
from secretbridge.core.metadata import parse_metadata

from tests.support import Bridge


def _code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


NESTED = {
    "plain": "v",
    "outer": {"inner": "deep", "more": {"x": "y"}},
    "list": ["a", "b"],
    "port": 5432,
    "ratio": 1.5,
    "on": True,
    "nothing": None,
}


def test_plain_mode_flattens_like_dapr_local_file_and_renders_json_scalars(bridge: Bridge, tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", json.dumps(NESTED))
    bridge.init({"backend": "file", "secretsFile": str(path)})
    assert bridge.get("outer:inner") == {"outer:inner": "deep"}
    assert bridge.get("outer:more:x") == {"outer:more:x": "y"}
    assert bridge.get("list:1") == {"list:1": "b"}
    assert bridge.get("port") == {"port": "5432"}
    assert bridge.get("ratio") == {"ratio": "1.5"}
    assert bridge.get("on") == {"on": "true"}
    assert bridge.get("nothing") == {"nothing": "null"}
    assert _code(lambda: bridge.get("outer")) == grpc.StatusCode.NOT_FOUND
    everything = bridge.bulk_get()
    assert everything["outer:inner"] == {"outer:inner": "deep"}
    assert set(everything) == {"plain", "outer:inner", "outer:more:x", "list:0", "list:1", "port", "ratio", "on",
                               "nothing"}


def test_nested_separator_is_honoured(bridge: Bridge, tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", json.dumps(NESTED))
    bridge.init({"backend": "file", "secretsFile": str(path), "nestedSeparator": "."})
    assert bridge.get("outer.more.x") == {"outer.more.x": "y"}


def test_multi_valued_mode_makes_each_top_level_object_one_secret(bridge: Bridge, tmp_path: Path) -> None:
    doc = {"conn": {"host": "h", "port": 1, "opts": {"tls": True}}, "single": "s"}
    path = _write(tmp_path / "s.json", json.dumps(doc))
    bridge.init({"backend": "file", "secretsFile": str(path), "multiValued": "true"})
    assert bridge.features() == ["MULTIPLE_KEY_VALUES_PER_SECRET"]
    assert bridge.get("conn") == {"host": "h", "port": "1", "opts:tls": "true"}
    assert bridge.get("single") == {"single": "s"}
    assert bridge.bulk_get() == {"conn": {"host": "h", "port": "1", "opts:tls": "true"}, "single": {"single": "s"}}


def test_yaml_files_are_read(bridge: Bridge, tmp_path: Path) -> None:
    path = _write(tmp_path / "s.yml", "db:\n  password: p4ss\ntoken: 'abc'\n")
    bridge.init({"backend": "file", "secretsFile": str(path)})
    assert bridge.get("db:password") == {"db:password": "p4ss"}


def test_the_file_is_read_again_when_it_changes(bridge: Bridge, tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", '{"k": "old"}')
    bridge.init({"backend": "file", "secretsFile": str(path), "recheckInterval": "0s"})
    assert bridge.get("k") == {"k": "old"}
    # Replace atomically, as editors and config managers do, with a new inode.
    staged = _write(tmp_path / "s.json.new", '{"k": "new", "added": "yes"}')
    os.replace(staged, path)
    assert bridge.get("k") == {"k": "new"}
    assert bridge.get("added") == {"added": "yes"}


def test_a_half_written_change_keeps_the_last_good_content(bridge: Bridge, tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", '{"k": "good"}')
    bridge.init({"backend": "file", "secretsFile": str(path), "recheckInterval": "0s"})
    path.write_text('{"k": "half')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert bridge.get("k") == {"k": "good"}
    path.write_text('{"k": "fixed"}')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    assert bridge.get("k") == {"k": "fixed"}


async def test_a_change_is_noticed_within_recheck_interval_and_not_stat_per_read(tmp_path: Path) -> None:
    """Reads between checks are served from memory; the first read after the interval sees the edit."""
    path = _write(tmp_path / "s.json", '{"k": "old"}')
    metadata = parse_metadata((*COMMON_PROPERTIES, *FileStore.properties),
                              {"backend": "file", "secretsFile": str(path), "recheckInterval": "1s"})
    store = FileStore(metadata, instance="t")
    now = [100.0]
    store.recheck.clock = lambda: now[0]
    await store.open()
    staged = _write(tmp_path / "s.json.new", '{"k": "new"}')
    os.replace(staged, path)
    now[0] += 0.5
    assert store.read_now("k") == {"k": "old"}  # within the interval: no stat, the snapshot
    now[0] += 0.6
    assert store.read_now("k") == {"k": "new"}
    assert await store.get("k") == {"k": "new"}
    with pytest.raises(NotFound):
        store.read_now("missing")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b'{"unterminated": ', "not usable JSON or YAML"),
        (b"- a\n- b\n", "top level is not an object"),
    ],
)
def test_an_unusable_file_fails_init_naming_secrets_file(
    bridge: Bridge, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "s.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(grpc.RpcError) as err:
        bridge.init({"backend": "file", "secretsFile": str(path)})
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "secretsFile" in err.value.details() and expected in err.value.details()


def test_a_directory_is_not_a_secrets_file(bridge: Bridge, tmp_path: Path) -> None:
    with pytest.raises(grpc.RpcError) as err:
        bridge.init({"backend": "file", "secretsFile": str(tmp_path)})
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "directory" in err.value.details()


def test_requests_for_versions_are_refused_by_stores_without_them(bridge: Bridge, tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", '{"k": "v"}')
    bridge.init({"backend": "file", "secretsFile": str(path)})
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("k", metadata={"version_id": "3"})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "version_id" in err.value.details()
    # daprd's secretKeyRef resolution sends a namespace: it is ignored.
    assert bridge.get("k", metadata={"namespace": "default"}) == {"k": "v"}


def test_maxresults_is_exact_and_validated(bridge: Bridge, tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", json.dumps({f"k{i}": str(i) for i in range(10)}))
    bridge.init({"backend": "file", "secretsFile": str(path)})
    assert len(bridge.bulk_get(metadata={"maxresults": "3"})) == 3
    assert len(bridge.bulk_get(metadata={"maxresults": "100"})) == 10
    # As Dapr's stores: 0 or less is no limit.
    assert len(bridge.bulk_get(metadata={"maxresults": "0"})) == 10
    assert len(bridge.bulk_get(metadata={"maxresults": "-1"})) == 10
    for bad in ("ten", "1.5"):
        with pytest.raises(grpc.RpcError) as err:
            bridge.bulk_get(metadata={"maxresults": bad})
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "maxresults" in err.value.details()


def test_allowed_and_denied_secrets_filter_get_and_bulk(bridge: Bridge, tmp_path: Path) -> None:
    path = _write(tmp_path / "s.json", '{"a": "1", "b": "2", "c": "3"}')
    bridge.init({"backend": "file", "secretsFile": str(path), "allowedSecrets": "a, b"}, instance="allow")
    bridge.init({"backend": "file", "secretsFile": str(path), "deniedSecrets": "b"}, instance="deny")
    assert bridge.get("a", instance="allow") == {"a": "1"}
    assert _code(lambda: bridge.get("c", instance="allow")) == grpc.StatusCode.PERMISSION_DENIED
    assert set(bridge.bulk_get(instance="allow")) == {"a", "b"}
    assert _code(lambda: bridge.get("b", instance="deny")) == grpc.StatusCode.PERMISSION_DENIED
    assert set(bridge.bulk_get(instance="deny")) == {"a", "c"}
    assert len(bridge.bulk_get(metadata={"maxresults": "1"}, instance="deny")) == 1


def test_env_backend_serves_prefixed_variables_and_says_not_found(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SBTEST_DB_PASSWORD", "pw")
    monkeypatch.setenv("SBTEST_EMPTY", "")
    bridge.init({"backend": "env", "prefix": "SBTEST_"})
    assert bridge.get("DB_PASSWORD") == {"DB_PASSWORD": "pw"}
    assert bridge.get("EMPTY") == {"EMPTY": ""}
    assert _code(lambda: bridge.get("MISSING")) == grpc.StatusCode.NOT_FOUND
    assert bridge.bulk_get() == {"DB_PASSWORD": {"DB_PASSWORD": "pw"}, "EMPTY": {"EMPTY": ""}}


def test_env_backend_never_serves_dapr_or_identity_variables(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAPR_API_TOKEN", "dapr-token-value")
    monkeypatch.setenv("APP_API_TOKEN", "app-token-value")
    monkeypatch.setenv("IDENTITY_HEADER", "identity-header-value")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "client-secret-value")
    bridge.init({"backend": "env"})
    for name in ("DAPR_API_TOKEN", "APP_API_TOKEN", "IDENTITY_HEADER", "AZURE_CLIENT_SECRET", "dapr_api_token"):
        with pytest.raises(grpc.RpcError) as err:
            bridge.get(name)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "value" not in err.value.details()
    every = bridge.bulk_get()
    assert not {"DAPR_API_TOKEN", "APP_API_TOKEN", "IDENTITY_HEADER", "AZURE_CLIENT_SECRET"} & set(every)


def test_a_bug_in_the_fast_path_is_internal_and_logged_not_a_dropped_call(
    bridge: Bridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "s.json", '{"k": "v"}')
    bridge.init({"backend": "file", "secretsFile": str(path)})

    def broken(self: FileStore, name: str, version: str | None = None, view: object = None) -> dict[str, str]:
        raise RuntimeError("a bug in read_now")

    monkeypatch.setattr(FileStore, "read_now", broken)
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("k")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "RuntimeError" in (err.value.details() or "")
