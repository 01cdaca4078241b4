"""The socket is the trust boundary: who may connect, what a Component may reach, and start-up faults.

Checks that need another user run a child process as uid 65534 (`subprocess` `user=`/`group=`),
so they need root; as another user they are skipped with that reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from secretbridge.core.errors import FailedPrecondition
from secretbridge.core.policy import STRICT
from secretbridge.runtime.server import SecretBridgeServer, ServerOptions

from tests.support import Bridge, serve_bridge, short_tempdir

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid (65534) needs root")

def connects_as(path: Path, uid: int, gid: int, groups: tuple[int, ...] = ()) -> bool:
    """Whether a process running as `uid`/`gid` (and only `groups` besides) may connect to `path`.

    A forked child drops to that user and tries; it touches nothing but one plain socket."""
    pid = os.fork()
    if pid == 0:  # the child: no Python clean-up, no gRPC, just the answer as the exit code
        code = 2
        try:
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
                code = 0
            except PermissionError:
                code = 13
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 13), f"the child as uid {uid} could not try ({code})"
    return code == 0


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A socket folder others may traverse (0755), so only the socket's own mode decides."""
    folder = short_tempdir()
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def start(folder: Path, **options: object) -> SecretBridgeServer:
    return SecretBridgeServer(ServerOptions(socket_folder=folder, http_port=None, **options)).start()  # type: ignore[arg-type]


# -- who may connect ------------------------------------------------------------------------------


@needs_root
def test_another_user_cannot_connect_by_default(open_folder: Path) -> None:
    server = start(open_folder)
    try:
        assert stat.S_IMODE(server.socket_path.stat().st_mode) == 0o660
        assert not connects_as(server.socket_path, NOBODY, NOBODY)
        assert connects_as(server.socket_path, os.geteuid(), os.getegid())
    finally:
        server.stop()


@needs_root
def test_members_of_the_socket_group_connect_and_others_do_not(open_folder: Path) -> None:
    server = start(open_folder, socket_group=NOBODY)
    try:
        assert server.socket_path.stat().st_gid == NOBODY
        assert connects_as(server.socket_path, 12345, 12345, groups=(NOBODY,))  # daprd, given the group
        assert not connects_as(server.socket_path, 12345, 12345)
    finally:
        server.stop()


@needs_root
def test_an_open_socket_is_an_explicit_logged_choice(open_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        server = start(open_folder, socket_mode=0o666)
    try:
        assert connects_as(server.socket_path, NOBODY, NOBODY)
        assert any("every local user" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    finally:
        server.stop()


def test_a_folder_secretbridge_creates_is_not_writable_by_others(tmp_path: Path) -> None:
    folder = Path(short_tempdir()) / "made" / "here"
    old = os.umask(0)  # even with a permissive umask
    try:
        server = start(folder)
    finally:
        os.umask(old)
    try:
        mode = stat.S_IMODE(folder.stat().st_mode)
        assert not mode & (stat.S_IWOTH | stat.S_IWGRP), oct(mode)
    finally:
        server.stop()
        shutil.rmtree(folder.parent.parent, ignore_errors=True)


@needs_root
def test_a_folder_owned_by_another_user_is_refused(open_folder: Path) -> None:
    os.chown(open_folder, NOBODY, NOBODY)
    server = SecretBridgeServer(ServerOptions(socket_folder=open_folder, http_port=None))
    with pytest.raises(FailedPrecondition) as caught:
        server.start()
    assert "uid 65534" in caught.value.message and "--socket-folder" in caught.value.message
    assert list(open_folder.iterdir()) == []  # no socket left


def test_a_folder_anyone_may_write_without_the_sticky_bit_is_warned_about(
    open_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    open_folder.chmod(0o777)
    with caplog.at_level(logging.WARNING):
        start(open_folder).stop()
    assert any("sticky" in r.getMessage() for r in caplog.records)
    caplog.clear()
    open_folder.chmod(0o1777)
    with caplog.at_level(logging.WARNING):
        start(open_folder).stop()
    assert not any("sticky" in r.getMessage() for r in caplog.records)


# -- start-up faults read as messages -------------------------------------------------------------


def serve_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "secretbridge", "--log-format", "text", "serve", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )


def assert_one_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_a_busy_http_port_is_one_line_and_leaves_no_socket(open_folder: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = serve_process("--socket-folder", str(open_folder), "--http-host", "127.0.0.1", "--http-port", str(port))
    assert_one_line(done, "--http-port", str(port))
    assert not (open_folder / "secretbridge.sock").exists()


def test_an_unusable_socket_folder_is_one_line(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    done = serve_process("--socket-folder", str(not_a_folder), "--http-port", "-1")
    assert_one_line(done, "--socket-folder", str(not_a_folder))


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--socket-mode", "999"), ("--socket-group", "no-such-group-here"), ("--workers", "0"),
     ("--http-port", "70000"), ("--allow-vault-host", "https://x/y"), ("--max-file-bytes", "-5")],
)
def test_a_bad_flag_is_one_line_naming_it(open_folder: Path, flag: str, value: str) -> None:
    done = serve_process("--socket-folder", str(open_folder), "--http-port", "-1", flag, value)
    assert done.returncode == 2
    assert_one_line(done, flag)
    assert not (open_folder / "secretbridge.sock").exists()


def test_a_bad_allow_list_in_the_environment_is_one_line(open_folder: Path) -> None:
    env = {**os.environ, "SECRETBRIDGE_ALLOW_VAULT_HOSTS": "ok.example,https://bad/"}
    done = serve_process("--socket-folder", str(open_folder), "--http-port", "-1", env=env)
    assert_one_line(done, "SECRETBRIDGE_ALLOW_VAULT_HOSTS")


def test_a_second_serve_leaves_the_live_socket_alone(open_folder: Path) -> None:
    server = start(open_folder)
    try:
        before = server.socket_path.lstat().st_ino
        done = serve_process("--socket-folder", str(open_folder), "--http-port", "-1")
        assert_one_line(done, "another process is serving", "--name")
        assert server.socket_path.lstat().st_ino == before
        bridge = Bridge(server.socket_path)
        bridge.ping()  # still answering
        bridge.close()
    finally:
        server.stop()


def test_a_failed_in_process_start_removes_nothing_it_did_not_create(open_folder: Path) -> None:
    live = start(open_folder)
    try:
        second = SecretBridgeServer(ServerOptions(socket_folder=open_folder, http_port=None))
        with pytest.raises(FailedPrecondition):
            second.start()
        second.stop()
        assert live.socket_path.exists()
    finally:
        live.stop()
    assert not live.socket_path.exists()  # its own socket, it does remove


# -- metric labels are bounded ---------------------------------------------------------------------


def test_junk_instance_headers_share_one_metric_label() -> None:
    from secretbridge.runtime.metrics import metrics_text

    with serve_bridge(policy=STRICT) as bridge:
        for n in range(200):
            with pytest.raises(grpc.RpcError) as caught:
                bridge.get("x", instance=f"junk-{n}-" + "y" * 50)
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    text = metrics_text().decode()
    assert "junk-" not in text
    assert 'instance="(unknown)"' in text


@needs_root
def test_the_socket_group_may_be_named(open_folder: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "secretbridge", "serve", "--socket-folder", str(open_folder), "--http-port", "-1",
         "--socket-group", "nogroup"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    path = open_folder / "secretbridge.sock"
    try:
        bridge = Bridge(path)
        try:
            grpc.channel_ready_future(bridge.channel).result(timeout=30)
        finally:
            bridge.close()
        info = path.stat()
        assert info.st_gid == NOBODY and stat.S_IMODE(info.st_mode) == 0o660
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
    assert not path.exists()
