"""The sidecar image, built from deploy/Dockerfile (`make image`), run the way the shipped manifests run it.

The pod: the image's user and group from app-manual.yaml, a read-only root filesystem with no writable /tmp
(the manifests give none), no capabilities, no new privileges, no network but loopback, the socket folder a
bind mount standing in for the pod's emptyDir (group-owned by the pod's fsGroup, setgid, as the kubelet makes
it), shared with the real daprd (the lean build) running on the host as daprd's image runs, 65532:65532, started
after the socket appears. An app reads a secret through daprd with the dapr SDK and over HTTP; /readyz and
/metrics answer inside the container (where a kubelet's probe would reach them; the host has no route to a
container without a network); SIGTERM removes the socket; the Init metadata is kept on the socket volume, so a
restarted container serves the same store to the same daprd.

Also checked against the image: what the Kubernetes manifests, the Container Apps YAML and the Bicep template say
about it (user, group, ports, probes, entrypoint, socket folder), its version, and that its user can write
nowhere in it but the socket folder.

The image comes from tools/image/build_image.py, which `make test` runs first; when there is none for the
current sources the tests skip, saying how to build it, except under CI (`CI=true`), where that fails the run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.stack import (
    REPO,
    child_env,
    daprd_binary,
    daprd_command,
    daprd_env,
    free_port,
    http_get,
    wait_until,
)
from tests.support import short_tempdir
from tests.test_deploy_manifests import DOCS, args_value, is_secretbridge, secretbridge_containers

BUILD_IMAGE = REPO / "tools" / "image" / "build_image.py"
HOW_TO_BUILD = "run `make image` (builds deploy/Dockerfile with Docker or Podman; docs/deployment.md, \"The image\")"
SOCKET_FOLDER = "/tmp/dapr-components-sockets"  # where daprd looks, and where the injector mounts the socket volume
DAPRD_USER = 65532  # daprd's image runs as 65532:65532 (distroless nonroot)
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
SECRET = "s3cr3t-from-the-pod"


@cache
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_image", BUILD_IMAGE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def image() -> tuple[Any, str]:
    """(engine, image name) of the image built from the current sources."""
    try:
        return tool().current_image()  # type: ignore[no-any-return]
    except tool().ImageError as err:
        message = f"no image: {err}; {HOW_TO_BUILD}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def run_in(engine: Any, ref: str, entrypoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A throwaway container of the image, no network."""
    pull = ["--pull=never"] if engine.name == "podman" else []
    return engine.run("run", "--rm", "--network=none", *pull, "--entrypoint", entrypoint, ref, *args,  # type: ignore[no-any-return]
                      check=False)


# -- what the manifests say about the image ---------------------------------------------------------------


def manual_sidecar() -> dict[str, Any]:
    """secretbridge as app-manual.yaml declares it (the recommended layout), with its pod's securityContext."""
    template = DOCS["app-manual.yaml:Deployment/orders"]["spec"]["template"]
    (sidecar,) = [c for c in template["spec"]["initContainers"] if is_secretbridge(c)]
    return {"container": sidecar, "pod": template["spec"]["securityContext"]}


def container_app() -> dict[str, Any]:
    app = yaml.safe_load((REPO / "deploy" / "containerapps" / "app.yaml").read_text())
    (container,) = [c for c in app["properties"]["template"]["containers"] if c["name"] == "secretbridge"]
    return container  # type: ignore[no-any-return]


def bicep_secretbridge() -> str:
    """The Bicep template's secretbridge container, as text (from its name to the next container's)."""
    bicep = (REPO / "deploy" / "containerapps" / "main.bicep").read_text()
    found = re.search(r"name: 'secretbridge'(.*?)name: 'daprd'", bicep, re.S)
    assert found, "main.bicep has no secretbridge container before daprd's"
    return found[1]


def test_the_manifests_describe_the_built_image(image: tuple[Any, str]) -> None:
    engine, ref = image
    config = engine.inspect(ref)["Config"]
    exposed = set(config.get("ExposedPorts") or {})
    volumes = set(config.get("Volumes") or {})
    entrypoint, cmd = config.get("Entrypoint") or [], config.get("Cmd") or []
    # Every manifest gives `args` and no `command`: the args replace Cmd and follow the Entrypoint, which must
    # therefore be the serve command on its own.
    assert entrypoint[:1] == ["secretbridge"] and entrypoint[-1] == "serve" and not cmd, config
    user, group = (int(part) for part in config["User"].split(":"))

    checked = 0
    for where, container in secretbridge_containers():
        assert "command" not in container, where
        security = container["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"]) == (user, group), where
        ports = {p["containerPort"] for p in container.get("ports", [])}
        ports |= {container[probe]["httpGet"]["port"] for probe in ("readinessProbe", "livenessProbe")}
        assert {f"{port}/tcp" for port in ports} <= exposed, where
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])} or {SOCKET_FOLDER}  # injected: injector's
        assert mounts == {SOCKET_FOLDER} <= volumes, where
        assert args_value(container, "--socket-group") == str(group), where
        checked += 1
    assert checked >= 2

    # Container Apps has no securityContext: the image's own user and group are what run there.
    app = container_app()
    assert "command" not in app
    assert args_value(app, "--socket-group") == str(group)
    assert {f"{p['httpGet']['port']}/tcp" for p in app["probes"]} <= exposed
    app_volumes = yaml.safe_load((REPO / "deploy" / "containerapps" / "app.yaml").read_text())
    empty_dirs = {v["name"] for v in app_volumes["properties"]["template"]["volumes"] if v["storageType"] == "EmptyDir"}
    assert {m["mountPath"] for m in app["volumeMounts"] if m["volumeName"] in empty_dirs} == {SOCKET_FOLDER}

    bicep = bicep_secretbridge()
    assert "command:" not in bicep
    assert f"'--socket-group', '{group}'" in bicep
    assert {f"{port}/tcp" for port in re.findall(r"port: (\d+)", bicep)} <= exposed
    assert re.findall(r"mountPath: '([^']+)'", bicep)[0] == SOCKET_FOLDER

    # The startup probe's command is in the image (distroless images would lack it).
    probe = manual_sidecar()["container"]["startupProbe"]["exec"]["command"]
    assert run_in(engine, ref, probe[0], "-x", probe[0]).returncode == 0, probe


# -- what the image holds ---------------------------------------------------------------------------------


def test_the_image_holds_the_version_and_the_entrypoint_the_manifests_call(image: tuple[Any, str]) -> None:
    engine, ref = image
    entrypoint = engine.inspect(ref)["Config"]["Entrypoint"]
    version = run_in(engine, ref, entrypoint[0], "--version")
    assert version.stdout.strip() == f"secretbridge {VERSION}", version.stderr
    shell = "command -v secretbridge; for c in gcc cc c++ clang pip pip3; do command -v $c; done; " \
            "ls -d /src /wheels /opt/build /opt/secretbridge/bin/pip* 2>/dev/null; true"
    found = run_in(engine, ref, "/bin/sh", "-c", shell).stdout.split()
    # The virtual environment's entry point only: no compiler, no pip, nothing of the build stage.
    assert found == ["/opt/secretbridge/bin/secretbridge"], found
    site = run_in(engine, ref, "/opt/secretbridge/bin/python", "-c",
                  "import secretbridge, pathlib; print(pathlib.Path(secretbridge.__file__).parent.parent)")
    listed = run_in(engine, ref, "/bin/ls", site.stdout.strip()).stdout.split()
    assert "secretbridge" in listed and not {"tests", "bench", "docs", "examples"} & set(listed), listed


def writable_by(member: tarfile.TarInfo, uid: int, gids: set[int]) -> bool:
    if member.issym() or member.islnk() or member.ischr() or member.isblk():
        # A link's own mode means nothing (its target is checked where it lies); device nodes are the
        # runtime's, which mounts its own /dev over the image's.
        return False
    mode = member.mode
    return bool((member.uid == uid and mode & 0o200) or (member.gid in gids and mode & 0o020) or mode & 0o002)


def test_the_image_user_can_write_only_the_socket_folder(image: tuple[Any, str]) -> None:
    engine, ref = image
    config = engine.inspect(ref)["Config"]
    uid, gid = (int(part) for part in config["User"].split(":"))
    pod = manual_sidecar()["pod"]
    name = f"sbimg-export-{uuid.uuid4().hex[:8]}"
    engine.run("create", *(["--pull=never"] if engine.name == "podman" else []), "--name", name, ref)
    try:
        # The image's files as a tar stream, as they are before anything is mounted over them.
        export = subprocess.run(engine.popen_args("export", name), env={**os.environ, **engine.env},
                                capture_output=True, check=True)
    finally:
        engine.run("rm", "--force", "--volumes", name, check=False)  # and the anonymous volume
    with tarfile.open(fileobj=io.BytesIO(export.stdout)) as tar:
        members = tar.getmembers()
    writable = sorted("/" + m.name.strip("./") for m in members if writable_by(m, uid, {gid, pod["fsGroup"]}))
    assert len(members) > 1000
    assert writable == [SOCKET_FOLDER], writable


def test_the_writable_check_sees_what_it_should() -> None:
    def member(uid: int, gid: int, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo("x")
        info.uid, info.gid, info.mode = uid, gid, mode
        return info

    assert not writable_by(member(0, 0, 0o755), 10001, {65532})
    assert writable_by(member(0, 0, 0o1777), 10001, {65532})
    assert writable_by(member(10001, 0, 0o600), 10001, {65532})
    assert writable_by(member(0, 65532, 0o660), 10001, {65532})
    assert not writable_by(member(10001, 0, 0o400), 10001, {65532})


# -- the pod ---------------------------------------------------------------------------------------------


def confinement(security: dict[str, Any]) -> list[str]:
    """The engine flags for a container securityContext (its user and group aside)."""
    flags = []
    if security.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    flags += [f"--cap-drop={cap}" for cap in security.get("capabilities", {}).get("drop", [])]
    flags += [f"--cap-add={cap}" for cap in security.get("capabilities", {}).get("add", [])]
    if security.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    # seccompProfile RuntimeDefault is what the engine applies unless told otherwise.
    assert security.get("seccompProfile", {}).get("type", "RuntimeDefault") == "RuntimeDefault", security
    return flags


class Pod:
    """The container as a layout's manifest runs it, and its socket folder on the host.

    `kubernetes` (app-manual.yaml): the container's runAsUser and runAsGroup, the pod's fsGroup added to its
    groups, the emptyDir group-owned by the fsGroup with the setgid bit, as the kubelet leaves it.
    `containerapps` (app.yaml): no securityContext, so the image's own user and group; an EmptyDir owned by
    root, mode 0777, as Kubernetes creates one (Container Apps documents neither).
    """

    def __init__(self, engine: Any, ref: str, work: Path, layout: str) -> None:
        self.engine, self.ref = engine, ref
        self.name = f"sbimg-pod-{uuid.uuid4().hex[:8]}"
        self.sockets = work / "sockets"
        self.sockets.mkdir()
        if layout == "kubernetes":
            sidecar = manual_sidecar()
            container = sidecar["container"]
            security = container["securityContext"]
            self.fs_group: int | None = sidecar["pod"]["fsGroup"]
            self.identity = ["--user", f"{security['runAsUser']}:{security['runAsGroup']}",
                             "--group-add", str(self.fs_group)]
            self.confinement = confinement(security)
            self.uid = security["runAsUser"]
            os.chown(self.sockets, 0, sidecar["pod"]["fsGroup"])
            os.chmod(self.sockets, 0o2777)
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            secrets_path = "/mnt/secrets"  # the backend's default; the Kubernetes Component uses Key Vault
        else:
            container = container_app()
            self.fs_group = None
            self.identity = []
            # Container Apps sets none of these; the pod runs confined as the Kubernetes manifests ask anyway, so
            # the image is shown to need no more there than here.
            self.confinement = confinement(manual_sidecar()["container"]["securityContext"])
            self.uid = int(engine.inspect(ref)["Config"]["User"].split(":")[0])
            os.chmod(self.sockets, 0o777)
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            secrets_path = next(m["mountPath"] for m in container["volumeMounts"] if m["volumeName"] == "app-secrets")
        assert SOCKET_FOLDER in mounts, mounts
        self.args = container["args"]
        self.secrets_path = secrets_path
        # A secret volume: one file per secret, read-only.
        self.secrets = work / "secrets"
        self.secrets.mkdir()
        (self.secrets / "db-password").write_text(SECRET)
        self.socket = self.sockets / f"{args_value(container, '--name')}.sock"
        self.socket_group = int(args_value(container, "--socket-group") or -1)

    def run_command(self) -> list[str]:
        assert {"--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"} <= set(self.confinement)
        podman = ["--pull=never", "--read-only-tmpfs=false"] if self.engine.name == "podman" else []
        return [
            "run", "--detach", "--name", self.name, *podman,
            "--network=none", *self.confinement, *self.identity,
            "--volume", f"{self.sockets}:{SOCKET_FOLDER}", "--volume", f"{self.secrets}:{self.secrets_path}:ro",
            self.ref, *self.args,
        ]

    def running(self) -> bool:
        state = self.engine.run("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def wait_for_socket(self) -> None:
        deadline = time.monotonic() + 60
        while not self.socket.is_socket():
            assert self.running(), f"the container exited:\n{self.logs()}"
            assert time.monotonic() < deadline, f"no socket after 60 s:\n{self.logs()}"
            time.sleep(0.1)

    def logs(self) -> str:
        done = self.engine.run("logs", self.name, check=False)
        return (done.stdout or "") + (done.stderr or "")

    def probe(self, path: str) -> tuple[int, str]:
        """GET http://127.0.0.1:8081<path> from inside the container, as a kubelet's httpGet probe asks."""
        script = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n r = urllib.request.urlopen('http://127.0.0.1:8081' + sys.argv[1], timeout=10)\n"
            "except urllib.error.HTTPError as e:\n r = e\n"
            "print(r.status); print(r.read().decode())\n"
        )
        done = self.engine.run("exec", self.name, "/opt/secretbridge/bin/python", "-c", script, path, check=False)
        assert done.returncode == 0, done.stderr
        status, _, body = done.stdout.partition("\n")
        return int(status), body


@contextlib.contextmanager
def pod_beside_daprd(engine: Any, ref: str, layout: str) -> Iterator[tuple[Pod, Any, dict[str, str]]]:
    """The container, then daprd (as 65532, in the pod's fsGroup if any) once the socket exists; (pod, daprd,
    the app's environment)."""
    work = short_tempdir("sbimg-")
    os.chmod(work, 0o755)  # daprd's user reads its resources here
    pod = Pod(engine, ref, work, layout)
    resources = work / "resources"
    resources.mkdir()
    (resources / "secrets.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: secrets}\n"
        "spec:\n  type: secretstores.secretbridge\n  version: v1\n  metadata:\n"
        f"    - {{name: backend, value: containerapps}}\n    - {{name: secretsPath, value: {pod.secrets_path}}}\n"
    )
    os.chmod(resources, 0o755)
    daprd = None
    try:
        engine.run(*pod.run_command())
        pod.wait_for_socket()
        http, grpc = free_port(), free_port()
        # A copy daprd's user can execute (the cache may sit in root's home, closed to others).
        binary = Path(shutil.copy2(daprd_binary(), work / "daprd"))
        command = daprd_command(binary, resources=resources, http=http, grpc=grpc, config=None)
        log = work / "daprd.log"
        handle = open(log, "wb")  # noqa: SIM115 - daprd's output, for the failure message
        daprd = subprocess.Popen(command, env=daprd_env(pod.sockets, None), stdout=handle, stderr=subprocess.STDOUT,
                                 user=DAPRD_USER, group=DAPRD_USER, cwd=work,
                                 extra_groups=[] if pod.fs_group is None else [pod.fs_group])
        handle.close()
        health = f"http://127.0.0.1:{http}/v1.0/healthz"
        try:
            wait_until(lambda: http_get(health, timeout=2)[0] == 204, "daprd health", daprd, timeout=60)
        except AssertionError:
            raise AssertionError(f"daprd:\n{log.read_text()[-3000:]}\nsecretbridge:\n{pod.logs()}") from None
        env = child_env(DAPR_HTTP_PORT=str(http), DAPR_GRPC_PORT=str(grpc), DAPR_HEALTH_TIMEOUT="30")
        yield pod, daprd, env
    finally:
        if daprd is not None:
            daprd.terminate()
            try:
                daprd.wait(15)
            except subprocess.TimeoutExpired:
                daprd.kill()
                daprd.wait()
        engine.run("rm", "--force", "--volumes", pod.name, check=False)
        shutil.rmtree(work, ignore_errors=True)


def read_through_daprd(env: dict[str, str]) -> dict[str, Any]:
    """examples/read_secrets.py: the dapr SDK over gRPC, then plain HTTP, through daprd."""
    done = subprocess.run([sys.executable, str(REPO / "examples" / "read_secrets.py"), "--json", "secrets",
                           "db-password"], env=env, cwd=REPO, capture_output=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("layout", ["kubernetes", "containerapps"])
def test_the_image_serves_daprd_as_a_pod_runs_it(image: tuple[Any, str], layout: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("the pod test runs the container as the manifests' uid and daprd as 65532: it needs root")
    engine, ref = image
    with pod_beside_daprd(engine, ref, layout) as (pod, daprd, env):
        # daprd reaches the socket through its group alone: mode 0660, the group daprd's image runs as.
        info = pod.socket.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (pod.uid, DAPRD_USER, 0o660)
        assert pod.socket_group == DAPRD_USER

        read = read_through_daprd(env)
        assert read["grpc"]["get"]["db-password"] == {"data": {"db-password": SECRET}}, read
        assert read["http"]["get"]["db-password"] == {"status": 200, "body": {"db-password": SECRET}}, read

        assert pod.probe("/healthz")[0] == 200
        status, body = pod.probe("/readyz")
        assert status == 200, body
        status, metrics = pod.probe("/metrics")
        assert status == 200 and "secretbridge_" in metrics
        assert SECRET not in metrics + body + pod.logs()

        # The Init metadata, kept on the socket volume (the only thing that outlives the container), owner-only.
        state = pod.sockets / ".secretbridge-state" / "secretbridge"
        (kept,) = state.iterdir()
        assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (pod.uid, 0o700)
        assert (kept.stat().st_uid, kept.stat().st_mode & 0o777) == (pod.uid, 0o600)
        assert pod.secrets_path in kept.read_text() and SECRET not in kept.read_text()

        # What the kubelet sends when the pod stops: the socket goes, the process exits cleanly.
        pod.engine.run("kill", "--signal", "TERM", pod.name)
        wait_until(lambda: not pod.socket.exists(), "the socket removed after SIGTERM", timeout=10)
        exit_code = pod.engine.run("wait", pod.name).stdout.strip()
        assert exit_code == "0", pod.logs()

        # A restarted container (same volume, same daprd, no new Init from daprd) serves the store again.
        pod.engine.run("start", pod.name)
        pod.wait_for_socket()
        read = read_through_daprd(env)
        assert read["http"]["get"]["db-password"] == {"status": 200, "body": {"db-password": SECRET}}, read
        assert daprd.poll() is None
