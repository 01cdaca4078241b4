"""`secretbridge dev` (what `make run` calls) on the repository's components/local, as real processes,
in front of the real daprd and of the development gateway: it says which runtime it started, the
printed curl and Python lines work, Ctrl-C stops everything and removes the socket folder."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.stack import REPO, child_env, daprd_binary, free_port


def _reader(stream, lines: queue.Queue[str | None]) -> None:
    for raw in iter(stream.readline, b""):
        lines.put(raw.decode(errors="replace"))
    lines.put(None)


def _collect_until(lines: queue.Queue[str | None], marker: str, timeout: float = 40.0) -> str:
    seen: list[str] = []
    while True:
        line = lines.get(timeout=timeout)
        if line is None:
            raise AssertionError("dev exited before printing instructions:\n" + "".join(seen))
        seen.append(line)
        if marker in line:
            return "".join(seen)


@pytest.mark.parametrize("runtime", ["daprd", "gateway"])
def test_dev_prints_working_lines_and_stops_cleanly(runtime: str) -> None:
    http_port, grpc_port = free_port(), free_port()
    env = child_env()
    env.pop("DAPRD", None)
    with_daprd = ["--daprd", str(daprd_binary())] if runtime == "daprd" else []
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "secretbridge",
            "dev",
            "--resources-path",
            "components/local",
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            *with_daprd,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    try:
        text = _collect_until(lines, "Press Ctrl-C", timeout=90)
        if runtime == "daprd":
            assert re.search(r"through daprd \d+\.\d+\.\d+\.", text), text
            assert "NOT daprd" not in text
        else:
            assert "NOT daprd" in text and "no daprd found" in text and "make daprd" in text
        curl = re.search(r"^\s*curl (\S+)$", text, re.MULTILINE)
        assert curl is not None, text
        assert curl.group(1) == f"http://localhost:{http_port}/v1.0/secrets/localsecrets/db-password"
        with urllib.request.urlopen(curl.group(1).replace("localhost", "127.0.0.1"), timeout=10) as reply:
            data = json.loads(reply.read())
        assert list(data) == ["db-password"] and data["db-password"]
        python_line = next(line.strip() for line in text.splitlines() if "DaprClient" in line)
        done = subprocess.run(
            ["bash", "-c", python_line], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "db-password" in done.stdout
        folder = Path(re.search(r"socket folder (\S+)", text).group(1))  # type: ignore[union-attr]
        assert (folder / "secretbridge.sock").exists()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not folder.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dev_refuses_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "secretbridge",
                "dev",
                "--resources-path",
                "components/local",
                "--http-port",
                str(port),
                "--grpc-port",
                str(free_port()),
            ],
            cwd=REPO,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is busy" in done.stderr and "--http-port" in done.stderr
