"""The Kubernetes manifests users copy: valid for the API server, "restricted", socket shared, started in order.

Offline: the schemas are the Kubernetes OpenAPI-derived JSON schemas that the kubernetes-validate package
ships; the Pod Security Standard "restricted" rules are checked field by field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
COMPONENT_CONTAINER = "dapr.io/component-container"
SOCKET_GID = 65532  # the gid of daprd's image (distroless nonroot, 65532:65532)
# Native sidecars (init containers with restartPolicy: Always) are on by default from 1.29.
OLDEST, NEWEST = "1.29", kubernetes_validate.latest_version()

Doc = dict[str, Any]


def documents() -> Iterator[tuple[str, Doc]]:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc


DOCS = dict(documents())


def pod_specs() -> Iterator[tuple[str, Doc]]:
    for where, doc in DOCS.items():
        if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            yield where, doc["spec"]["template"]
        elif doc["kind"] == "Pod":
            yield where, doc


def injected_containers() -> Iterator[tuple[str, Doc]]:
    """Containers a Component's dapr.io/component-container annotation has the injector add."""
    for where, doc in DOCS.items():
        annotation = (doc["metadata"].get("annotations") or {}).get(COMPONENT_CONTAINER)
        if doc["kind"] == "Component" and annotation:
            yield where, json.loads(annotation)


def containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def is_secretbridge(container: Doc) -> bool:
    return "secretbridge" in container["image"].rsplit("/", 1)[-1]


def secretbridge_containers() -> Iterator[tuple[str, Doc]]:
    for where, template in pod_specs():
        for container in containers(template["spec"]):
            if is_secretbridge(container):
                yield where, container
    yield from injected_containers()


def test_there_is_something_to_check() -> None:
    assert len(list(pod_specs())) >= 2 and len(list(injected_containers())) == 1
    assert len(list(secretbridge_containers())) >= 2


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("where", [w for w, d in DOCS.items() if d["kind"] != "Component"])
def test_manifests_match_the_kubernetes_schema(where: str, version: str) -> None:
    # strict: an unknown or misspelt field is an error, as kubectl's server-side field validation makes it.
    kubernetes_validate.validate(DOCS[where], version, strict=True)


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_the_injected_container_matches_the_kubernetes_schema(version: str) -> None:
    for _, container in injected_containers():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "injected"}, "spec": {"containers": [container]}}
        kubernetes_validate.validate(pod, version, strict=True)


ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}


def restricted_violations(container: Doc, pod: Doc | None) -> list[str]:
    """What the Pod Security Standard "restricted" (and our own rule, a read-only root) refuses in a container.

    `pod` is the pod's securityContext where we own the pod spec (its runAsNonRoot and seccompProfile are
    inherited by the container), None for a container the injector adds to someone else's pod.
    """
    own = container.get("securityContext") or {}
    inherited = pod or {}
    found = []
    if own.get("runAsNonRoot", inherited.get("runAsNonRoot")) is not True:
        found.append("runAsNonRoot is not true")
    if 0 in (own.get("runAsUser"), inherited.get("runAsUser")):
        found.append("runAsUser 0")
    if own.get("allowPrivilegeEscalation") is not False:
        found.append("allowPrivilegeEscalation is not false")
    if own.get("readOnlyRootFilesystem") is not True:
        found.append("readOnlyRootFilesystem is not true")
    capabilities = own.get("capabilities") or {}
    if "ALL" not in capabilities.get("drop", []):
        found.append("capabilities do not drop ALL")
    if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
        found.append(f"capabilities add {capabilities['add']}")
    seccomp = (own.get("seccompProfile") or inherited.get("seccompProfile") or {}).get("type")
    if seccomp not in {"RuntimeDefault", "Localhost"}:
        found.append(f"seccompProfile is {seccomp}")
    if own.get("privileged") or own.get("procMount", "Default") != "Default":
        found.append("privileged or an unmasked /proc")
    if (own.get("windowsOptions") or {}).get("hostProcess"):
        found.append("hostProcess")
    if any(port.get("hostPort") for port in container.get("ports", [])):
        found.append("a hostPort")
    return found


def test_every_container_we_declare_meets_the_restricted_profile() -> None:
    checked = 0
    for where, template in pod_specs():
        spec = template["spec"]
        pod = spec.get("securityContext") or {}
        assert pod.get("runAsNonRoot") is True, where
        assert (pod.get("seccompProfile") or {}).get("type") == "RuntimeDefault", where
        assert not (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")), where
        assert not (pod.get("sysctls")), where
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= ALLOWED_VOLUMES, (where, volume)
        for container in containers(spec):
            assert restricted_violations(container, pod) == [], (where, container["name"])
            checked += 1
    for where, container in injected_containers():
        # Not our pod: nothing may come from a pod-level securityContext.
        assert restricted_violations(container, None) == [], where
        checked += 1
    assert checked >= 4


def test_the_restricted_check_refuses_what_it_should() -> None:
    sound = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
             "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert restricted_violations({"securityContext": sound}, None) == []
    bad_values = [
        ("runAsNonRoot", False),
        ("allowPrivilegeEscalation", True),
        ("readOnlyRootFilesystem", False),
        ("capabilities", {"drop": ["NET_RAW"]}),
        ("capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
        ("seccompProfile", {"type": "Unconfined"}),
        ("privileged", True),
        ("runAsUser", 0),
    ]
    for field, bad in bad_values:
        assert restricted_violations({"securityContext": {**sound, field: bad}}, None), field
    inherits = {k: v for k, v in sound.items() if k not in {"runAsNonRoot", "seccompProfile"}}
    pod = {"runAsNonRoot": True, "seccompProfile": sound["seccompProfile"]}
    assert restricted_violations({"securityContext": inherits}, {}) != []
    assert restricted_violations({"securityContext": inherits}, pod) == []


def args_value(container: Doc, flag: str) -> str | None:
    args = [*container.get("command", []), *container.get("args", [])]
    return args[args.index(flag) + 1] if flag in args else None


def test_daprd_and_secretbridge_share_the_socket_group() -> None:
    for where, template in pod_specs():
        spec = template["spec"]
        if any(is_secretbridge(c) for c in containers(spec)) or template["metadata"].get("annotations", {}).get(
            "dapr.io/inject-pluggable-components"
        ) == "true":
            # fsGroup: Kubernetes makes the socket volume group-owned by it (setgid) and adds it to the groups of
            # every container in the pod, daprd included (the injector sets no pod-level securityContext).
            assert spec["securityContext"]["fsGroup"] == SOCKET_GID, where
    for where, container in secretbridge_containers():
        assert args_value(container, "--socket-group") == str(SOCKET_GID), where
        assert container["securityContext"]["runAsGroup"] == SOCKET_GID, where
        assert args_value(container, "--socket-mode") is None, f"{where}: the socket stays 0660"


def test_the_image_runs_with_the_socket_group() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"USER 10001:{SOCKET_GID}" in dockerfile.splitlines()


def test_the_declared_sidecar_starts_before_daprd_with_its_socket_ready() -> None:
    manual = DOCS["app-manual.yaml:Deployment/orders"]["spec"]["template"]
    annotations, spec = manual["metadata"]["annotations"], manual["spec"]
    (sidecar,) = [c for c in spec["initContainers"] if is_secretbridge(c)]
    # A native sidecar: Kubernetes starts what follows (daprd in containers, or daprd appended to
    # initContainers under dapr.io/enable-native-sidecar) only once its startupProbe has passed.
    assert sidecar["restartPolicy"] == "Always"
    assert spec["initContainers"][0] is sidecar
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    name = args_value(sidecar, "--name") or "secretbridge"
    # The socket daprd will look for: on our volume, which the injector mounts into daprd at the same folder.
    volume, folder = annotations["dapr.io/volume-mounts-rw"].split(":")
    assert mounts[volume] == folder == "/tmp/dapr-components-sockets"
    assert {"name": volume, "emptyDir": {"sizeLimit": "16Mi"}} in spec["volumes"]
    assert sidecar["startupProbe"]["exec"]["command"] == ["/usr/bin/test", "-S", f"{folder}/{name}.sock"]
    probe = sidecar["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 60
    # The injector's own socket volume would be mounted at the same folder in daprd: a pod it rejects.
    assert "dapr.io/inject-pluggable-components" not in annotations
    assert "secretbridge" not in annotations.get("dapr.io/pluggable-components", "")


def test_liveness_asks_the_process_and_readiness_the_backends() -> None:
    for where, container in secretbridge_containers():
        live, ready = container["livenessProbe"], container["readinessProbe"]
        assert live["httpGet"]["path"] == "/healthz" and live["httpGet"]["port"] == 8081, where
        assert ready["httpGet"]["path"] == "/readyz" and ready["httpGet"]["port"] == 8081, where
        # A slow vault never reaches /healthz, and a busy process gets two minutes before a restart.
        assert live.get("timeoutSeconds", 1) >= 5, where
        assert live.get("periodSeconds", 10) * live.get("failureThreshold", 3) >= 120, where
        if "startupProbe" in container:
            assert "/readyz" not in json.dumps(container["startupProbe"]), where


CONTAINER_APPS = ROOT / "deploy" / "containerapps"


def test_the_container_app_shares_the_socket_with_daprd_alone() -> None:
    app = yaml.safe_load((CONTAINER_APPS / "app.yaml").read_text())
    template = app["properties"]["template"]
    by_name = {c["name"]: c for c in template["containers"]}
    (socket_volume,) = [v["name"] for v in template["volumes"] if v["storageType"] == "EmptyDir"]
    mounting = {
        name for name, c in by_name.items() if socket_volume in {m["volumeName"] for m in c.get("volumeMounts", [])}
    }
    assert mounting == {"secretbridge", "daprd"}
    for name in mounting:
        (mount,) = [m for m in by_name[name]["volumeMounts"] if m["volumeName"] == socket_volume]
        assert mount["mountPath"] == "/tmp/dapr-components-sockets", name
    # No fsGroup on Container Apps: secretbridge's image gives the socket its primary group, daprd's gid.
    assert args_value(by_name["secretbridge"], "--socket-group") == str(SOCKET_GID)
    assert args_value(by_name["secretbridge"], "--socket-mode") is None
    probes = {p["type"]: p for p in by_name["secretbridge"]["probes"]}
    live, ready = probes["Liveness"], probes["Readiness"]
    assert live["httpGet"] == {"path": "/healthz", "port": 8081}
    assert ready["httpGet"] == {"path": "/readyz", "port": 8081}
    assert live["timeoutSeconds"] >= 5 and live["periodSeconds"] * live["failureThreshold"] >= 120
    # Container Apps' limits on probe settings.
    for probe in probes.values():
        assert 1 <= probe.get("failureThreshold", 3) <= 10 and 1 <= probe.get("periodSeconds", 10) <= 240


def test_the_bicep_template_says_the_same() -> None:
    bicep = (CONTAINER_APPS / "main.bicep").read_text()
    assert f"'--socket-group', '{SOCKET_GID}'" in bicep
    assert "--socket-mode" not in bicep
    assert (
        "{ type: 'Liveness', httpGet: { path: '/healthz', port: 8081 }, periodSeconds: 20, timeoutSeconds: 5, "
        "failureThreshold: 6 }" in bicep
    )
    assert "{ type: 'Readiness', httpGet: { path: '/readyz', port: 8081 }" in bicep
    assert bicep.count("{ volumeName: 'dapr-sockets', mountPath: '/tmp/dapr-components-sockets' }") == 2
