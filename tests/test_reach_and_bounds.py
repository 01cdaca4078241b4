"""What Component metadata cannot reach (vault hosts, kernel files, FIFOs, huge files, alias bombs),
and what one caller cannot take from the others (the gRPC workers); bugs that read as bugs."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from secretbridge.azure.hosts import operator_listed, parse_vault_host, parse_vault_hosts, vault_host_problem
from secretbridge.backends.file import FileStore
from secretbridge.core.policy import STRICT, OperatorPolicy
from secretbridge.tools.check import check_component

from tests.fakes import FakeKeyVault, FakeManagedIdentity, vault_metadata
from tests.support import Bridge, eventually, serve_bridge
from tests.test_containerapps import AtomicVolume

pytest_plugins = ("tests.fakes.fixtures",)


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details() or ""


def listed(*entries: str, **caps: int) -> OperatorPolicy:
    return OperatorPolicy(vault_hosts=parse_vault_hosts(entries), **caps)


# -- operator-only powers ---------------------------------------------------------------------------


def test_the_allow_list_rule() -> None:
    assert parse_vault_host("LocalHost.") == ("localhost", None)
    assert parse_vault_host("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert parse_vault_host("[::1]:8443") == ("::1", 8443)
    for bad in ("https://x", "x/y", "u@x", ":8443", "x:99999", "a b"):
        with pytest.raises(ValueError):
            parse_vault_host(bad)
    allowed = parse_vault_hosts(["emu:8443", "any.local", "a,b:1"])
    assert operator_listed(allowed, "emu", 8443) and not operator_listed(allowed, "emu", 9443)
    assert operator_listed(allowed, "any.local", 1) and operator_listed(allowed, "ANY.local", None)
    assert operator_listed(allowed, "b", 1) and not operator_listed(allowed, "b", 2)
    # Azure's own hosts need no listing, but never with relaxed verification, listed or not.
    assert vault_host_problem("kv.vault.azure.net", None, frozenset()) is None
    assert vault_host_problem("kv.vault.azure.net", 8443, frozenset()) is not None
    assert vault_host_problem("kv.vault.azure.net", None, parse_vault_hosts(["kv.vault.azure.net"]), relaxed=True)
    assert vault_host_problem("kv.vault.azure.net.evil.io", None, frozenset()) is not None
    assert vault_host_problem("emu", 8443, allowed, relaxed=True) is None


def test_an_unlisted_vault_host_gets_no_request_and_no_token(
    strict_bridge: Bridge, fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity
) -> None:
    fake_vault.set_secret("db", "never-sent")
    host = f"127.0.0.1:{fake_vault.port}"
    for metadata in (
        {"backend": "keyvault", "vaultUri": fake_vault.url, "failFast": "true"},
        {"backend": "keyvault", **vault_metadata(fake_vault), "failFast": "true"},
    ):
        code, message = code_of(lambda m=metadata: strict_bridge.init(m))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert host in message and "--allow-vault-host" in message and "SECRETBRIDGE_ALLOW_VAULT_HOSTS" in message
    # The recording HTTPS fakes saw nothing: no vault request, and no token was ever asked for.
    assert fake_vault.count("total") == 0
    assert fake_identity.requests == []


def test_relaxed_verification_needs_the_host_listed_with_that_port(
    fake_vault: FakeKeyVault, fake_identity: FakeManagedIdentity
) -> None:
    fake_vault.set_secret("db", "v")
    with serve_bridge(policy=listed("127.0.0.1:1")) as other_port:
        code, message = code_of(lambda: other_port.init({"backend": "keyvault", **vault_metadata(fake_vault)}))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "--allow-vault-host" in message
    with serve_bridge(policy=listed(f"127.0.0.1:{fake_vault.port}")) as this_port:
        this_port.init({"backend": "keyvault", **vault_metadata(fake_vault)})
        assert this_port.get("db") == {"db": "v"}
    assert fake_identity.requests  # only the listed server ever asked for a token


def test_check_judges_as_serve_would(fake_vault: FakeKeyVault) -> None:
    document = {
        "kind": "Component",
        "metadata": {"name": "kv"},
        "spec": {"type": "secretstores.secretbridge", "version": "v1",
                 "metadata": [{"name": "backend", "value": "keyvault"}, {"name": "vaultUri", "value": fake_vault.url}]},
    }
    strict = check_component(document, "x.yaml")
    assert strict.errors and "--allow-vault-host" in strict.errors[0].text
    assert not check_component(document, "x.yaml", listed("127.0.0.1")).errors


# -- file-system reach --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/proc/self/environ", "/proc/1/environ", "/sys/kernel/uevent_seqnum", "/dev/zero"])
def test_kernel_files_are_never_a_secrets_file(strict_bridge: Bridge, path: str) -> None:
    code, message = code_of(lambda: strict_bridge.init({"backend": "file", "secretsFile": path}))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "secretsFile" in message and path.split("/")[1] in message


def test_a_link_into_proc_is_refused_too(strict_bridge: Bridge, tmp_path: Path) -> None:
    (tmp_path / "secrets.yaml").symlink_to("/proc/self/environ")
    (tmp_path / "vol").symlink_to("/proc/self")
    link = str(tmp_path / "secrets.yaml")
    code, message = code_of(lambda: strict_bridge.init({"backend": "file", "secretsFile": link}))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "/proc" in message
    for path in ("/proc/self", str(tmp_path / "vol")):
        code, message = code_of(lambda p=path: strict_bridge.init(  # type: ignore[misc]
            {"backend": "containerapps", "secretsPath": p, "resolveKeyVaultReferences": "false"}))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "/proc" in message and "secretsPath" in message
        assert "IDENTITY" not in message


def test_a_fifo_is_refused_without_blocking_anyone(strict_bridge: Bridge, tmp_path: Path) -> None:
    fifo = tmp_path / "secrets.json"
    os.mkfifo(fifo)
    code, message = code_of(lambda: strict_bridge.init({"backend": "file", "secretsFile": str(fifo)}, timeout=20))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "FIFO" in message
    volume = AtomicVolume(tmp_path / "vol")
    volume.write({"ok": "fine"})
    os.mkfifo(volume.root / "pipe")
    strict_bridge.init({"backend": "containerapps", "secretsPath": str(volume.root)}, instance="vol")
    code, message = code_of(lambda: strict_bridge.get("pipe", instance="vol", timeout=20))
    assert code == grpc.StatusCode.NOT_FOUND and "not a regular file" in message
    assert strict_bridge.bulk_get(instance="vol", timeout=20) == {"ok": {"ok": "fine"}}


def test_size_caps_are_the_operators(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"a": "x" * 2000}))
    volume = AtomicVolume(tmp_path / "vol")
    volume.write({f"s{n}": "y" * 400 for n in range(5)})
    with serve_bridge(policy=listed(max_file_bytes=1000, max_volume_bytes=1500)) as bridge:
        code, message = code_of(lambda: bridge.init({"backend": "file", "secretsFile": str(big)}))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "--max-file-bytes" in message
        bridge.init({"backend": "containerapps", "secretsPath": str(volume.root)})
        assert bridge.get("s0") == {"s0": "y" * 400}  # one file is within its cap
        code, message = code_of(lambda: bridge.bulk_get())
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "--max-volume-bytes" in message
    with serve_bridge(policy=STRICT) as bridge:  # the defaults fit both
        bridge.init({"backend": "file", "secretsFile": str(big)})
        assert bridge.get("a") == {"a": "x" * 2000}


def test_yaml_aliases_are_refused(strict_bridge: Bridge, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, 12):
        lines.append(f"{chr(97 + n)}: &{chr(97 + n)} [" + ",".join([f"*{chr(96 + n)}"] * 9) + "]")
    bomb.write_text("\n".join(lines) + "\n")
    code, message = code_of(lambda: strict_bridge.init({"backend": "file", "secretsFile": str(bomb)}, timeout=20))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "alias" in message and "line 2" in message
    plain = tmp_path / "plain.yaml"
    plain.write_text("db: &anchor s3cret\n")  # an anchor alone expands nothing
    strict_bridge.init({"backend": "file", "secretsFile": str(plain)})
    assert strict_bridge.get("db") == {"db": "s3cret"}


def test_a_secret_removed_by_a_swap_mid_read_is_never_an_internal_error(strict_bridge: Bridge, tmp_path: Path) -> None:
    volume = AtomicVolume(tmp_path / "vol")
    volume.write({"flip": "one", "keep": "k"})
    strict_bridge.init({"backend": "containerapps", "secretsPath": str(volume.root)})
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            volume.write({"keep": "k"})  # removes flip's link and its folder
            volume.write({"flip": "two", "keep": "k"})

    writer = threading.Thread(target=swap)
    writer.start()
    codes: set[grpc.StatusCode] = set()
    try:
        for _ in range(300):
            try:
                assert strict_bridge.get("flip")["flip"] in ("one", "two")
                codes.add(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.add(err.code())
            assert strict_bridge.get("keep") == {"keep": "k"}
    finally:
        stop.set()
        writer.join()
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}, codes


# -- one instance cannot take every worker ----------------------------------------------------------


@pytest.fixture
def small_bridge() -> Iterator[Bridge]:
    """A server with 16 workers (one instance may hold 14), allowing the fakes' host."""
    with serve_bridge(workers=16, policy=listed("127.0.0.1"), shutdown_grace=1.0) as bridge:
        yield bridge


def test_a_slow_instance_cannot_starve_the_others(
    small_bridge: Bridge, fake_vault: FakeKeyVault, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = small_bridge
    assert bridge.server is not None
    for n in range(48):
        fake_vault.set_secret(f"slow-{n}", "v")
    bridge.init({"backend": "keyvault", **vault_metadata(fake_vault, requestTimeout="60s")}, instance="slow")
    slow = bridge.server.instances.find("slow")
    assert slow is not None and slow.cached is not None
    cache = slow.cached
    assert cache.work_limit == 14  # the instance's share of 16 workers
    secrets = tmp_path / "fast.json"
    secrets.write_text(json.dumps({"db": "fast-value"}))
    bridge.init({"backend": "file", "secretsFile": str(secrets)}, instance="fast")
    fake_vault.hold()  # the slow instance's backend holds every miss until the end
    outcomes: list[object] = []

    def read(name: str) -> None:
        try:
            outcomes.append(bridge.get(name, instance="slow", timeout=120))
        except grpc.RpcError as err:
            outcomes.append((err.code(), err.details()))

    pool = ThreadPoolExecutor(48 + 40)
    with caplog.at_level(logging.INFO):
        for n in range(48):
            pool.submit(read, f"slow-{n}")
        assert eventually(lambda: cache.work_in_flight() == cache.work_limit, within=30)
        # Every distinct miss past the share was turned away at once, saying the backend is saturated.
        assert eventually(lambda: len(outcomes) == 48 - 14, within=30)
        refused = [o for o in outcomes if isinstance(o, tuple)]
        assert len(refused) == 48 - 14
        assert all(code == grpc.StatusCode.RESOURCE_EXHAUSTED and "instance 'slow'" in text
                   and "saturated" in text for code, text in refused)
        # Forty more callers of secrets already being read are no new work: none is refused, none
        # holds a worker another instance needs.
        waiting_on = [key for key, _ in cache._misses][:4]
        for n in range(40):
            pool.submit(read, waiting_on[n % len(waiting_on)])
        assert eventually(lambda: fake_vault.held >= 14, within=30)
        # Meanwhile the other instance answers every call.
        for _ in range(50):
            assert bridge.get("db", instance="fast", timeout=20) == {"db": "fast-value"}
        assert len(outcomes) == 48 - 14  # ... while the slow one was still saturated
        assert cache.work_in_flight() == cache.work_limit
        fake_vault.release()
        pool.shutdown(wait=True)
    assert len(outcomes) == 48 + 40
    answered = [o for o in outcomes if isinstance(o, dict)]
    assert len(answered) == 14 + 40 and all(o == {next(iter(o)): "v"} for o in answered)
    assert not [r for r in caplog.records if "bug" in r.getMessage()]


# -- bugs read as bugs, messages stay clean -----------------------------------------------------------


async def _buggy_get(self: FileStore, name: str, version: str | None = None) -> dict[str, str]:
    raise RuntimeError("boom with Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl inside")


def test_an_unexpected_exception_logs_its_redacted_traceback(
    strict_bridge: Bridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = tmp_path / "s.json"
    secrets.write_text('{"x": "1"}')
    strict_bridge.init({"backend": "file", "secretsFile": str(secrets)})
    monkeypatch.setattr(FileStore, "get", _buggy_get)  # a bug, planted in the store
    monkeypatch.setattr(FileStore, "read_now", lambda self, name, version=None: None)  # so Get reaches it
    with caplog.at_level(logging.ERROR):
        code, message = code_of(lambda: strict_bridge.get("x"))
    assert code == grpc.StatusCode.INTERNAL and "RuntimeError" in message and "eyJ" not in message
    (record,) = [r for r in caplog.records if "bug" in r.getMessage()]
    assert record.levelno == logging.ERROR
    trace = record.__dict__["traceback"]
    assert trace.startswith("Traceback") and "_buggy_get" in trace
    # The stack and the class, never the text: a bug's message may quote what it mishandled.
    # (The source line quoted in the stack is code, not the runtime text.)
    assert trace.rstrip().endswith("RuntimeError") and "RuntimeError: boom" not in trace and "eyJ" not in trace


def test_credentials_in_a_url_never_reach_a_message_or_a_log(
    strict_bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        code, message = code_of(lambda: strict_bridge.init(
            {"backend": "keyvault", "vaultUri": "https://admin:hunter22@127.0.0.1:1"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "vaultUri" in message
    assert "hunter22" not in message and "[redacted]" in message
    assert not [r for r in caplog.records if "hunter22" in f"{r.getMessage()} {r.__dict__}"]


def test_an_invalid_tenant_is_invalid_argument(strict_bridge: Bridge) -> None:
    code, message = code_of(lambda: strict_bridge.init({
        "backend": "keyvault", "vaultName": "myvault", "azureTenantId": "not a tenant!",
        "azureClientId": "00000000-0000-0000-0000-000000000000", "azureClientSecret": "s3cr3t-value",
    }))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "azureTenantId" in message
    assert "s3cr3t-value" not in message


def test_a_background_task_that_fails_logs_a_redacted_traceback(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import gc

    from secretbridge.runtime.loop import LoopThread

    io = LoopThread().start()

    async def refresh() -> None:
        raise RuntimeError("refresh failed: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")

    async def start_and_forget() -> None:
        task = asyncio.get_running_loop().create_task(refresh())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert task.done()

    with caplog.at_level(logging.ERROR):
        io.run(start_and_forget(), 10)
        gc.collect()  # asyncio reports a failed task nobody awaited when it is collected
        io.stop()
    (record,) = [r for r in caplog.records if "I/O loop" in r.getMessage()]
    trace = record.__dict__["traceback"]
    assert "in refresh" in trace and trace.rstrip().endswith("RuntimeError")
    assert "RuntimeError: refresh failed" not in trace
    assert "eyJ" not in f"{record.getMessage()} {record.__dict__}"
