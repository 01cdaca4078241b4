"""`secretbridge serve` as daprd's neighbour: a real process, signals, HTTP endpoints, logs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.fakes import FakeKeyVault, vault_metadata
from tests.support import Bridge, eventually, short_tempdir

pytest_plugins = ("tests.fakes.fixtures",)

SECRET_VALUES = {"db-password": "s3cr3t-Value-Never-Logged", "api": "another-Secret-1234567"}


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    socket: Path
    stderr: Path
    http_port: int

    def logs(self) -> str:
        return self.stderr.read_text()


def _wait_for_log(stderr: Path, message: str, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in stderr.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("msg") == message:
                return entry  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"no {message!r} log line; stderr:\n{stderr.read_text()}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with _serve(tmp_path) as served:
        yield served


@contextmanager
def _serve(tmp_path: Path, folder: Path | None = None, log_name: str = "stderr.log") -> Iterator[Served]:
    """`secretbridge serve` as a child process, with this process's environment.

    A `folder` given is kept (a later `_serve` on it is a restart); a fresh one is removed after.
    """
    owned = folder is None
    folder = short_tempdir() if folder is None else folder
    stderr = tmp_path / log_name
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "secretbridge", "--log-format", "json", "serve",
             "--socket-folder", str(folder), "--http-port", "0", "--http-host", "127.0.0.1",
             "--allow-vault-host", "127.0.0.1"],
            stderr=sink, stdout=subprocess.DEVNULL,
        )
    try:
        entry = _wait_for_log(stderr, "serving")
        yield Served(process, folder / "secretbridge.sock", stderr, int(entry["http_port"]))  # type: ignore[arg-type]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if owned:
            shutil.rmtree(folder, ignore_errors=True)


def _http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_then_exits_cleanly_on_signal(served: Served, tmp_path: Path, signum: int) -> None:
    secrets = tmp_path / "s.json"
    secrets.write_text(json.dumps(SECRET_VALUES))
    bridge = Bridge(served.socket)
    bridge.init({"backend": "file", "secretsFile": str(secrets)}, instance="local")
    assert bridge.get("db-password", instance="local") == {"db-password": SECRET_VALUES["db-password"]}
    bridge.close()
    started = time.monotonic()
    served.process.send_signal(signum)
    assert served.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert not served.socket.exists(), "the socket file must be removed on shutdown"


def test_http_endpoint_serves_health_readiness_and_metrics(served: Served, tmp_path: Path) -> None:
    secrets = tmp_path / "s.json"
    secrets.write_text(json.dumps(SECRET_VALUES))
    bridge = Bridge(served.socket)
    bridge.init({"backend": "file", "secretsFile": str(secrets)}, instance="local")
    bridge.get("db-password", instance="local")
    with pytest.raises(grpc.RpcError):
        bridge.get("missing", instance="local")
    assert _http(served.http_port, "/healthz")[0] == 200
    status, body = _http(served.http_port, "/readyz")
    assert status == 200 and json.loads(body)["instances"] == {"local": "ready"}
    status, metrics = _http(served.http_port, "/metrics")
    assert status == 200
    assert 'secretbridge_requests_total{code="OK",instance="local",method="Get"} 1.0' in metrics
    assert 'secretbridge_requests_total{code="NOT_FOUND",instance="local",method="Get"} 1.0' in metrics
    for value in SECRET_VALUES.values():
        assert value not in metrics
    bridge.close()


def test_no_secret_value_reaches_the_logs(served: Served, tmp_path: Path) -> None:
    secrets = tmp_path / "s.json"
    secrets.write_text(json.dumps(SECRET_VALUES))
    bridge = Bridge(served.socket)
    bridge.init({"backend": "file", "secretsFile": str(secrets), "unknownThing": "x", "recheckInterval": "0s"},
                instance="local")
    bridge.get("db-password", instance="local")
    bridge.bulk_get(instance="local")
    # A broken rewrite is logged (with the cause) and the last good content kept.
    secrets.write_text('{"db-password": "' + SECRET_VALUES["db-password"] + '", broken')
    os.utime(secrets, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert bridge.get("db-password", instance="local") == {"db-password": SECRET_VALUES["db-password"]}
    for bad in ("missing", "", "\x00"):
        with pytest.raises(grpc.RpcError):
            bridge.get(bad, instance="local")
    with pytest.raises(grpc.RpcError):
        bridge.init({"backend": "file", "secretsFile": str(secrets)}, instance="broken")
    bridge.close()
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(timeout=10)
    logs = served.logs()
    assert "secrets file changed but cannot be used" in logs
    for value in SECRET_VALUES.values():
        assert value not in logs
    for line in logs.splitlines():
        json.loads(line)  # every line is JSON when not on a terminal


def test_sigterm_with_a_hung_backend_call_still_exits_within_ten_seconds(
    fake_vault: FakeKeyVault, tmp_path: Path
) -> None:
    fake_vault.set_secret("slow", "v")
    with _serve(tmp_path) as served:  # started after the fakes: it inherits their environment
        bridge = Bridge(served.socket)
        bridge.init({"backend": "keyvault", **vault_metadata(fake_vault, requestTimeout="60s")})
        fake_vault.set_latency(60)  # the vault takes a minute to answer
        outcome: list[object] = []

        def read() -> None:
            try:
                outcome.append(bridge.get("slow"))
            except grpc.RpcError as err:
                outcome.append(err.code())

        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 10
        while fake_vault.reads_in_flight < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake_vault.reads_in_flight >= 1, "the read never reached the vault"
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=10) == 0
        reader.join(5)
        assert outcome and outcome[0] != {"slow": "v"}  # it could not finish; it was ended, not left hanging
        assert not served.socket.exists()
        bridge.close()


def test_instances_survive_kill_9_and_answer_without_a_new_init(fake_vault: FakeKeyVault, tmp_path: Path) -> None:
    """daprd never sends Init again after secretbridge restarts: the instances must come back by themselves."""
    fake_vault.set_secret("db-password", SECRET_VALUES["db-password"])
    secrets = tmp_path / "s.json"
    secrets.write_text(json.dumps(SECRET_VALUES))
    folder = short_tempdir()
    try:
        with _serve(tmp_path, folder, "first.log") as first:
            bridge = Bridge(first.socket)
            bridge.init({"backend": "file", "secretsFile": str(secrets)}, instance="local")
            bridge.init({"backend": "keyvault", **vault_metadata(fake_vault)}, instance="vault")
            assert bridge.get("api", instance="local") == {"api": SECRET_VALUES["api"]}
            bridge.close()
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=10)
        assert first.socket.exists(), "kill -9 leaves the socket file behind, as a crash does"
        with _serve(tmp_path, folder, "second.log") as second:
            # The same channel daprd would keep: no Init on this side of the restart.
            bridge = Bridge(second.socket)
            assert bridge.get("api", instance="local") == {"api": SECRET_VALUES["api"]}
            assert bridge.get("db-password", instance="vault") == {"db-password": SECRET_VALUES["db-password"]}
            with pytest.raises(grpc.RpcError) as err:
                bridge.get("api", instance="never-initialised")
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            bridge.close()
            status, body = _http(second.http_port, "/readyz")
            assert status == 200, body
            assert json.loads(body)["instances"] == {"local": "ready", "vault": "ready"}
            logs = second.logs()
        assert "instance recovered after a restart" in logs
        for value in SECRET_VALUES.values():
            assert value not in logs
            for state_file in (folder / ".secretbridge-state").rglob("*.json"):
                assert value not in state_file.read_text()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_liveness_and_readiness_with_a_vault_that_never_answered(fake_vault: FakeKeyVault, tmp_path: Path) -> None:
    fake_vault.go_down()
    with _serve(tmp_path) as served:
        bridge = Bridge(served.socket)
        bridge.init({"backend": "keyvault", **vault_metadata(fake_vault, maxRetries="0", requestTimeout="1s")})
        bridge.close()
        # /healthz is liveness: it never looks at a backend, so a dead vault cannot cause a restart loop.
        assert _http(served.http_port, "/healthz") == (200, '{"status": "ok"}')
        status, body = _http(served.http_port, "/readyz")
        assert status == 503 and json.loads(body)["instances"]["default"] in ("starting", "backend down")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, body = _http(served.http_port, "/readyz?verbose")
            if json.loads(body)["instances"]["default"]["backend_up"] is False:
                break
            time.sleep(0.1)
        verbose = json.loads(body)["instances"]["default"]
        assert verbose["backend_up"] is False and verbose["counted"] is True and verbose["cause"], body
        metrics = _http(served.http_port, "/metrics")[1]
        assert 'secretbridge_backend_up{backend="keyvault",instance="default"} 0.0' in metrics
        fake_vault.come_up()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _http(served.http_port, "/readyz")[0] != 200:
            time.sleep(0.2)
        assert _http(served.http_port, "/readyz")[0] == 200
        assert 'secretbridge_backend_up{backend="keyvault",instance="default"} 1.0' in _http(
            served.http_port, "/metrics")[1]


def _names_kept(folder: Path) -> list[str]:
    """The names secretbridge keeps for a warm restart (every instance's names file together)."""
    found: list[str] = []
    for path in (folder / ".secretbridge-state").rglob("*.names"):
        with contextlib.suppress(ValueError):
            found += json.loads(path.read_text())["names"]
    return found


def test_a_warm_restart_serves_what_was_held_through_an_outage_that_follows(
    fake_vault: FakeKeyVault, tmp_path: Path
) -> None:
    """After kill -9 the cache is empty; the names it held are read again, so a vault outage right
    after the restart still finds them, while a secret never read before fails as it must."""
    held = {f"warm-{i}": f"warm-Value-{i}-Never-Logged" for i in range(5)}
    for name, value in held.items():
        fake_vault.set_secret(name, value)
    fake_vault.set_secret("never-read", "never-read-Value")
    metadata = {"backend": "keyvault", **vault_metadata(fake_vault, maxRetries="0", requestTimeout="2s")}
    folder = short_tempdir()
    try:
        with _serve(tmp_path, folder, "first.log") as first:
            bridge = Bridge(first.socket)
            bridge.init(metadata, instance="vault")
            for name, value in held.items():
                assert bridge.get(name, instance="vault") == {name: value}
            bridge.close()
            assert eventually(lambda: sorted(_names_kept(folder)) == sorted(held), within=30), _names_kept(folder)
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=10)
        fake_vault.reset_counters()
        with _serve(tmp_path, folder, "second.log") as second:
            warmed = _wait_for_log(second.stderr, "warm restart: secrets held before the restart read again")
            assert warmed["read"] == len(held) and warmed["failed"] == 0
            assert fake_vault.count("get") == len(held)
            fake_vault.fail(math.inf)
            bridge = Bridge(second.socket)
            for name, value in held.items():
                assert bridge.get(name, instance="vault") == {name: value}
            with pytest.raises(grpc.RpcError) as err:
                bridge.get("never-read", instance="vault")
            assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            bridge.close()
            logs = second.logs() + first.logs()
        for value in held.values():
            assert value not in logs
    finally:
        fake_vault.fail(0)
        shutil.rmtree(folder, ignore_errors=True)
