"""Under the real daprd: secretbridge killed -9 and restarted, the app still reads; a bulk read over daprd's
4 MiB limit reaches the app as a message naming `maxresults`.

daprd is the pinned lean build (`make daprd`, tools/daprd/README.md); the test is skipped, saying why, when
none is built and none can be found. The app is plain HTTP against daprd's secrets API, as an app's code is.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import short_tempdir

ROOT = Path(__file__).resolve().parent.parent
GET_DAPRD = ROOT / "tools" / "daprd" / "get_daprd.py"


def _daprd() -> Path:
    if not GET_DAPRD.exists():
        pytest.skip("tools/daprd/get_daprd.py is not in this tree")
    module = sys.modules.get("get_daprd")
    if module is None:
        spec = importlib.util.spec_from_file_location("get_daprd", GET_DAPRD)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["get_daprd"] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    try:
        return Path(module.find_daprd(build=False))
    except module.DaprdError as err:
        pytest.skip(f"no daprd built (run make daprd): {err}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def _read(port: int) -> tuple[int, object]:
    status, body = _http(port, "/v1.0/secrets/secrets/db-password")
    return status, json.loads(body) if status == 200 else body


def _until(check: object, within: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {within:g}s; log:\n{log.read_text()[-4000:]}")


@contextmanager
def _secretbridge(folder: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "secretbridge", "--log-format", "json", "serve", "--socket-folder", str(folder),
             "--http-port", "-1"],
            stderr=sink, stdout=subprocess.DEVNULL,
        )
    try:
        _until(lambda: '"serving"' in log.read_text(), 30, "secretbridge serving", log)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _component(name: str, secrets_file: Path) -> str:
    return (
        "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
        f"metadata:\n  name: {name}\n"
        "spec:\n  type: secretstores.secretbridge\n  version: v1\n  metadata:\n"
        "    - name: backend\n      value: file\n"
        f"    - name: secretsFile\n      value: {secrets_file}\n"
    )


@contextmanager
def _daprd_process(daprd: Path, folder: Path, resources: Path, log: Path) -> Iterator[int]:
    http_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAPR_")}
    env["DAPR_COMPONENTS_SOCKETS_FOLDER"] = str(folder)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(daprd), "--app-id", "restart-test", "--resources-path", str(resources),
             "--dapr-listen-addresses", "127.0.0.1", "--dapr-http-port", str(http_port),
             "--dapr-grpc-port", str(_free_port()), "--dapr-internal-grpc-port", str(_free_port()),
             "--metrics-port", str(_free_port()), "--log-level", "info"],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )
    try:
        _until(lambda: _http(http_port, "/v1.0/healthz")[0] == 204 or process.poll() is not None, 90,
               "daprd healthy", log)
        assert process.poll() is None, f"daprd exited:\n{log.read_text()[-4000:]}"
        yield http_port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_the_app_reads_through_daprd_after_secretbridge_is_killed_and_restarted(tmp_path: Path) -> None:
    daprd = _daprd()
    folder = short_tempdir()
    resources = tmp_path / "components"
    resources.mkdir()
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"db-password": "v1"}))
    big = tmp_path / "big.json"
    big.write_text(json.dumps({f"s{i:02d}": "x" * (512 * 1024) for i in range(10)}))  # 5 MiB in all
    (resources / "secrets.yaml").write_text(_component("secrets", small))
    (resources / "big.yaml").write_text(_component("big", big))
    try:
        with _secretbridge(folder, tmp_path / "sb-1.log") as first, \
                _daprd_process(daprd, folder, resources, tmp_path / "daprd.log") as port:
            assert _read(port) == (200, {"db-password": "v1"})

            # Over daprd's 4 MiB: the app sees secretbridge's words, not an opaque size error.
            status, body = _http(port, "/v1.0/secrets/big/bulk")
            assert status == 500 and "maxresults" in body and "4 MiB" in body, body
            fits = int(body.split("about ")[1].split(" ")[0])
            status, body = _http(port, f"/v1.0/secrets/big/bulk?metadata.maxresults={fits}")
            assert status == 200 and len(json.loads(body)) == fits

            first.send_signal(signal.SIGKILL)
            first.wait(10)
            with _secretbridge(folder, tmp_path / "sb-2.log"):
                # daprd reconnects by itself and sends no Init: the instance must already be there.
                _until(lambda: _http(port, "/v1.0/secrets/secrets/db-password")[0] == 200, 30,
                       "a 200 after the restart", tmp_path / "daprd.log")
                assert _read(port) == (200, {"db-password": "v1"})
                assert "instance recovered after a restart" in (tmp_path / "sb-2.log").read_text()
                assert '"msg": "instance initialised"' not in (tmp_path / "sb-2.log").read_text()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
