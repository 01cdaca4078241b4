"""`secretbridge dev` (what `make run` calls) on the repository's components/local, as real processes,
in front of the real daprd and of the development gateway: it says which runtime it started, the
printed curl and Python lines work, Ctrl-C stops everything and removes the socket folder, and from start
to stop nothing logs an error (a newcomer reads one as a failure)."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml
from secretbridge.dev import DevOptions, DevRun

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
    logs = tempfile.TemporaryFile()  # noqa: SIM115 - read after the run, closed below
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
        stderr=logs,
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
        logs.seek(0)
        logged = logs.read().decode(errors="replace")
        alarming = [line for line in logged.splitlines()
                    if re.search(r'level=(error|fatal)|"level": "(error|critical)"|non-YAML', line)]
        assert not alarming, "\n".join(alarming)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        logs.close()


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


def test_dev_names_the_resolver_the_lean_build_asks_for_and_keeps_the_user_s_configuration(tmp_path: Path) -> None:
    lean = tmp_path / "lean" / "daprd"
    lean.parent.mkdir()
    resolver = {"component": "nameformat", "configuration": {"format": "{appid}.invalid"}}
    (lean.parent / "daprd.json").write_text(json.dumps({"release": "1.18.2", "nameResolution": resolver}))
    other = tmp_path / "other" / "daprd"  # a `dapr init` install: mdns built in, no daprd.json
    other.parent.mkdir()
    user = tmp_path / "config.yaml"
    user.write_text("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: mine\n"
                    "spec:\n  secrets:\n    scopes:\n      - storeName: localsecrets\n        defaultAccess: deny\n")
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text(user.read_text() + "  nameResolution:\n    component: sqlite\n")
    runs = [DevRun(DevOptions("components/local", config=config)) for config in (None, str(user), str(chosen))]
    try:
        fresh, merged, kept = (run._daprd_config(str(lean)) for run in runs)
        assert fresh is not None and yaml.safe_load(Path(fresh).read_text())["spec"] == {"nameResolution": resolver}
        assert merged is not None and merged != str(user)
        spec = yaml.safe_load(Path(merged).read_text())["spec"]
        assert spec["nameResolution"] == resolver and spec["secrets"]["scopes"][0]["defaultAccess"] == "deny"
        assert kept == str(chosen)
        assert runs[0]._daprd_config(str(other)) is None and runs[1]._daprd_config(str(other)) == str(user)
    finally:
        for run in runs:
            run.stop()
