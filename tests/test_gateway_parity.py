"""The development gateway held to the real daprd, differentially.

One `secretbridge serve`, and in front of it both daprd and `secretbridge gateway` on the same
Components and Configuration. The same requests go to both; status, content type and body must be
the same byte for byte, except the differences listed in KNOWN_DIFFERENCES, each of which
docs/gateway.md explains.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.stack import REPO, Stack, child_env, start_runtime, start_serve, temp_folder
from tests.test_e2e_runtimes import SCOPES, component

#: Requests whose answers differ on purpose, with the reason docs/gateway.md gives.
KNOWN_DIFFERENCES: dict[str, str] = {}

REQUESTS = [
    ("GET", "/v1.0/secrets/local/db-password"),
    ("GET", "/v1.0/secrets/local/nested:inner"),
    ("GET", "/v1.0/secrets/local/nope"),
    ("GET", "/v1.0/secrets/local/internal"),
    ("GET", "/v1.0/secrets/local/bulk"),
    ("GET", "/v1.0/secrets/local/bulk?metadata.maxresults=1"),
    ("GET", "/v1.0/secrets/local/bulk?metadata.maxresults=x"),
    ("GET", "/v1.0/secrets/local/db-password?metadata.version_id=1"),
    ("GET", "/v1.0/secrets/local/db-password?metadata.version_id=1&metadata.version_id=2"),
    ("GET", "/v1.0/secrets/local/db-password/"),
    ("GET", "/v1.0/secrets/local/a%2Fb"),
    ("GET", "/v1.0/secrets/local/a%20b"),
    ("GET", "/v1.0/secrets/local/"),
    ("GET", "/v1.0/secrets/nostore/db-password"),
    ("GET", "/v1.0/secrets/nostore/bulk"),
    ("GET", "/v1.0/secrets/multi/conn"),
    ("GET", "/v1.0/secrets/multi/bulk"),
    ("GET", "/v1.0/secrets/volume/api-key"),
    ("GET", "/v1.0/secrets/volume/bulk"),
    ("GET", "/v1.0/healthz"),
    ("GET", "/v1.0/healthz/outbound"),
]


@dataclass
class Pair:
    daprd: Stack
    gateway: Stack
    folder: Path


def fetch(runtime: Stack, method: str, path: str) -> tuple[int, str, bytes]:
    """(status, media type, body) of one raw request."""
    request = urllib.request.Request(f"http://127.0.0.1:{runtime.http_port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            status, headers, body = reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, error.headers, error.read()
    media = (headers.get("Content-Type") or "").split(";")[0].strip()
    return status, media, body


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with temp_folder("sbpar-") as folder:
        (folder / "secrets.json").write_text(json.dumps({
            "db-password": "par-VALUE-1", "internal": "par-VALUE-2", "nested": {"inner": "par-VALUE-3"},
            "a/b": "par-VALUE-4", "a b": "par-VALUE-5", "html": "<&>",
        }))
        (folder / "multi.json").write_text(json.dumps({"conn": {"host": "db.local", "port": 5432}}))
        (folder / "volume").mkdir()
        (folder / "volume" / "api-key").write_text("par-VALUE-6")
        resources = folder / "resources"
        resources.mkdir()
        (resources / "components.yaml").write_text("---\n".join([
            component("local", {"backend": "file", "secretsFile": str(folder / "secrets.json")}),
            component("multi", {"backend": "file", "secretsFile": str(folder / "multi.json"),
                                "multiValued": "true"}),
            component("volume", {"backend": "containerapps", "secretsPath": str(folder / "volume")}),
        ]))
        scopes = SCOPES.replace("allowedSecrets: [db-password]", "allowedSecrets: [api-key]")
        (folder / "config.yaml").write_text(scopes)
        env = child_env()
        serve = start_serve(folder, env)
        with contextlib.ExitStack() as running:
            running.callback(serve.stop)
            daprd = start_runtime("daprd", folder, resources, folder / "config.yaml", env)
            running.callback(daprd.runtime.stop)
            gateway = start_runtime("gateway", folder, resources, folder / "config.yaml", env)
            running.callback(gateway.runtime.stop)
            yield Pair(daprd, gateway, folder)


@pytest.mark.parametrize(("method", "path"), REQUESTS, ids=[p for _, p in REQUESTS])
def test_http_answers_match_daprd(pair: Pair, method: str, path: str) -> None:
    want = fetch(pair.daprd, method, path)
    got = fetch(pair.gateway, method, path)
    if path in KNOWN_DIFFERENCES:
        pytest.xfail(KNOWN_DIFFERENCES[path])
    assert got == want


def test_sdk_answers_match_daprd(pair: Pair) -> None:
    keys = ("db-password", "nested:inner", "nope", "internal", "a/b", "html", "")
    want = pair.daprd.app("local", *keys)
    got = pair.gateway.app("local", *keys)
    assert got == want
    assert pair.gateway.app("nostore", "x") == pair.daprd.app("nostore", "x")
    limited = {"maxresults": "1"}
    assert pair.gateway.app("multi", "conn", metadata=limited) == pair.daprd.app("multi", "conn", metadata=limited)


def test_metadata_lists_the_same_components(pair: Pair) -> None:
    def components(runtime: Stack) -> list[dict[str, object]]:
        status, _, body = fetch(runtime, "GET", "/v1.0/metadata")
        assert status == 200
        listed = json.loads(body)["components"]
        return sorted(({k: c.get(k) for k in ("name", "type", "version", "capabilities")} for c in listed),
                      key=lambda c: str(c["name"]))

    assert components(pair.gateway) == components(pair.daprd)


def test_every_known_difference_is_documented() -> None:
    doc = (REPO / "docs" / "gateway.md").read_text()
    for path in KNOWN_DIFFERENCES:
        assert path in doc


SCRIPTED = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: secretstores.{type}
  version: v1
  metadata:
    - name: plain
      value: "x-{{appID}}-y"
    - name: ns
      value: "{{namespace}}"
    - name: pod
      value: "{pod}"
    - name: id
      value: "{{uuid}}"
    - name: both
      value: "given"
      envRef: PARITY_VAR
    - name: fromenv
      envRef: PARITY_VAR
    - name: number
      value: 5
"""


def _init_or_exit(kind: str, documents: list[str], env: dict[str, str]) -> tuple[str, object]:
    """What a scripted store's Init received from `kind`, or ("exit", code) when the runtime refused to start."""
    from tests.gateway_support import scripted_store

    with temp_folder("sbrf-") as folder, scripted_store(folder) as store:
        resources = folder / "resources"
        resources.mkdir()
        for index, document in enumerate(documents):
            (resources / f"{index}.yaml").write_text(document)
        try:
            started = start_runtime(kind, folder, resources, env=env)
        except AssertionError:
            return "exit", "refused to start"
        started.runtime.stop()
        return "init", store.inits


@pytest.mark.parametrize("pod_name", ["pod-7", None], ids=["POD_NAME set", "POD_NAME unset"])
def test_metadata_references_and_placeholders_match_daprd(pod_name: str | None) -> None:
    env = child_env(PARITY_VAR="from-env")
    env.pop("POD_NAME", None)
    if pod_name:
        env["POD_NAME"] = pod_name
    doc = SCRIPTED.format(name="s1", type="scripted", pod="{podName}")
    want = _init_or_exit("daprd", [doc], env)
    got = _init_or_exit("gateway", [doc], env)
    if want[0] == "init":
        assert got[0] == "init"
        wanted, gotten = dict(want[1]["s1"]), dict(got[1]["s1"])  # type: ignore[index]
        assert len(wanted.pop("id")) == len(gotten.pop("id")) == 36  # a fresh UUID each
        assert gotten == wanted == {"plain": "x-app-y", "ns": "default.app", "pod": pod_name, "both": "given",
                                    "fromenv": "from-env", "number": "5"}
    else:
        assert got == want


def test_a_duplicate_name_and_a_missing_socket_stop_both() -> None:
    env = child_env()
    first = SCRIPTED.format(name="s1", type="scripted", pod="p")
    for documents in ([first, first], [SCRIPTED.format(name="s2", type="nosocket", pod="p")]):
        assert _init_or_exit("daprd", documents, env) == ("exit", "refused to start")
        assert _init_or_exit("gateway", documents, env) == ("exit", "refused to start")
