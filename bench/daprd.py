"""Side by side through one real daprd: the built-in `secretstores.azure.keyvault` and secretbridge.

An app talks HTTP to one daprd (`GET /v1.0/secrets/<store>/<key>`, `.../bulk`) that serves two
Components reading the same Key Vault test double: the built-in store, and secretbridge's keyvault
backend through its Unix socket. The built-in store only talks to `https://<vaultName>.vault.azure.net`
on port 443, so:

- the double listens on port 443 of a loopback address of its own (127.14.0.1; any 127/8 address is
  loopback), with a certificate for `<vaultName>.vault.azure.net` from a throwaway CA, and names
  itself by that URL in its answers (ids, nextLinks);
- daprd and secretbridge each run in a mount namespace of their own (`unshare -m`) whose /etc/hosts
  (a temp file bind-mounted over it) maps that name to the double's address; nothing outside sees it;
- both trust the CA through `SSL_CERT_FILE` and get tokens from the fake managed identity through
  `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`.

secretbridge is configured as in production (`vaultName`, challenge verification on), so both stores
take the same route. Needs root (for unshare and port 443) and a daprd from tools/daprd/get_daprd.py;
without them the section says why and is skipped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import on_cpus, stop_process
from bench.vault import REPO_ROOT

#: The vault both stores read: its name, and the loopback address its name maps to.
VAULT_NAME = "sbbench"
VAULT_HOST = f"{VAULT_NAME}.vault.azure.net"
VAULT_ADDRESS = "127.14.0.1"
#: Component names (the store in the app's URL).
BUILTIN = "builtin"
BRIDGE = "bridge"

COMPONENTS = f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {BUILTIN}
spec:
  type: secretstores.azure.keyvault
  version: v1
  metadata:
  - name: vaultName
    value: {VAULT_NAME}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {BRIDGE}
spec:
  type: secretstores.secretbridge
  version: v1
  metadata:
  - name: backend
    value: keyvault
  - name: vaultName
    value: {VAULT_NAME}
  - name: requestTimeout
    value: 30s
"""


def find_daprd() -> tuple[Path | None, str]:
    """The daprd get_daprd.py finds (never built here), or None and why not."""
    script = REPO_ROOT / "tools" / "daprd" / "get_daprd.py"
    if not script.exists():
        return None, f"{script} is missing"
    spec = importlib.util.spec_from_file_location("get_daprd", script)
    if spec is None or spec.loader is None:
        return None, f"cannot load {script}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    try:
        return module.find_daprd(build=False, progress=False), ""
    except module.DaprdError as err:
        return None, str(err)


def cannot_run() -> str | None:
    """Why this machine cannot run the side-by-side, or None."""
    if os.geteuid() != 0:
        return "needs root (a mount namespace for /etc/hosts, port 443)"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "needs unshare(1) and mount(8)"
    with socket.socket() as probe:
        try:
            probe.bind((VAULT_ADDRESS, 443))
        except OSError as err:
            return f"cannot listen on {VAULT_ADDRESS}:443 ({err.strerror})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def in_namespace(hosts: Path, argv: list[str]) -> list[str]:
    """`argv` run in a new mount namespace where `hosts` is /etc/hosts."""
    return ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts), *argv]


@dataclass
class Running:
    """daprd serving: its HTTP API root, and every process started for it by name."""

    base: str
    pids: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def running(
    folder: Path, daprd: Path, env: dict[str, str], components: str = COMPONENTS, *,
    namespace: bool = True, plugs: Sequence[tuple[str, list[str]]] = (), cpus: Mapping[str, set[int]] | None = None,
) -> Iterator[Running]:
    """secretbridge (and each of `plugs`: a name and the arguments of a Python process serving
    `<sockets>/<name>.sock`), then daprd, which discovers them through the socket folder.
    `namespace`: every process in a mount namespace of its own whose /etc/hosts maps the vault's name
    (the built-in Key Vault store only talks to `https://<vaultName>.vault.azure.net`).
    `cpus`: the CPUs a process may run on, by its name ("daprd", "secretbridge", a plug's); the
    others run anywhere."""
    hosts = folder / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{VAULT_ADDRESS} {VAULT_HOST}\n")
    resources = folder / "resources"
    resources.mkdir(exist_ok=True)
    (resources / "components.yaml").write_text(components)
    sockets = folder / "sockets"
    sockets.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    started = Running("")

    def launch(name: str, argv: list[str], child: dict[str, str]) -> subprocess.Popen[bytes]:
        log = folder / f"{name}.log"
        logs.append(log)
        with log.open("wb") as sink:
            proc = subprocess.Popen(in_namespace(hosts, argv) if namespace else argv, cwd=REPO_ROOT, env=child,
                                    stdout=sink, stderr=subprocess.STDOUT, preexec_fn=on_cpus((cpus or {}).get(name)))
        procs.append(proc)
        started.pids[name] = proc.pid
        return proc

    try:
        servers = [("secretbridge", [
            "-m", "secretbridge", "--log-level", "warning", "--log-format", "json", "serve",
            "--socket-folder", str(sockets), "--name", "secretbridge", "--http-port", "-1",
        ]), *plugs]
        for name, argv in servers:
            launch(name, [sys.executable, *argv], env)
        for (name, _), proc, log in zip(servers, list(procs), list(logs), strict=True):
            path = sockets / f"{name}.sock"
            _wait(lambda p=path: p.exists(), proc, f"{name}'s socket", log)  # type: ignore[misc]
        http_port = free_port()
        daprd_env = {k: v for k, v in env.items()
                     if k not in ("NAMESPACE", "DAPR_PLACEMENT_HOST_ADDRESS", "DAPR_SCHEDULER_HOST_ADDRESS_DNS_A")}
        daprd_env["DAPR_COMPONENTS_SOCKETS_FOLDER"] = str(sockets)
        proc = launch("daprd", [
            str(daprd), "--app-id", "bench", "--mode", "standalone", "--resources-path", str(resources),
            "--dapr-listen-addresses", "127.0.0.1", "--dapr-http-port", str(http_port),
            "--dapr-grpc-port", str(free_port()), "--dapr-internal-grpc-port", str(free_port()),
            "--dapr-internal-grpc-listen-address", "127.0.0.1", "--dapr-public-port", str(free_port()),
            "--dapr-public-listen-address", "127.0.0.1", "--metrics-port", str(free_port()),
            "--metrics-listen-address", "127.0.0.1", "--log-level", "warn",
        ], daprd_env)
        started.base = f"http://127.0.0.1:{http_port}/v1.0"
        _wait(lambda: _status(f"{started.base}/healthz") == 204, proc, "daprd's health", logs[-1], timeout=60)
        yield started
    finally:
        for proc in reversed(procs):
            stop_process(proc)


#: No proxies: everything here is on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _status(url: str) -> int:
    try:
        with _OPENER.open(url, timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def _wait(check: object, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"no {what} (exit {proc.poll()}):\n{tail}")
        time.sleep(0.1)


def http_get(url: str, timeout: float = 300) -> tuple[int, bytes]:
    """One GET from the app's side."""
    try:
        with _OPENER.open(url, timeout=timeout) as answer:
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()
