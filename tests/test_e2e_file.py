"""End to end with real processes: `secretbridge serve` (file backend) behind `secretbridge gateway`,
read by examples/read_secrets.py through the real dapr SDK (gRPC) and plain HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack, http_get, run_stack, temp_folder, write_resources

SECRETS = {
    "db-password": "e2e-db-VALUE-1",
    "api-key": "e2e-api-VALUE-2",
    "internal-only": "e2e-internal-VALUE-3",
    "redis": {"host": "e2e-host-VALUE-4", "password": "e2e-redis-VALUE-5"},
    "empty": {},
}
APP_SECRETS = {"feature-flag-key": "e2e-flag-VALUE-6"}
VALUES = [
    "e2e-db-VALUE-1",
    "e2e-api-VALUE-2",
    "e2e-internal-VALUE-3",
    "e2e-host-VALUE-4",
    "e2e-redis-VALUE-5",
    "e2e-flag-VALUE-6",
]

COMPONENTS = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: appsecrets
spec:
  type: secretstores.secretbridge
  version: v1
  metadata:
    - name: backend
      value: file
    # The file's path is itself a secret of another store: resolved before Init, like daprd.
    - name: secretsFile
      secretKeyRef:
        name: app-secrets-path
auth:
  secretStore: localsecrets
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: localsecrets
spec:
  type: secretstores.secretbridge
  version: v1
  metadata:
    - name: backend
      value: file
    - name: secretsFile
      value: {folder}/secrets.json
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: multi
spec:
  type: secretstores.secretbridge
  version: v1
  metadata:
    - name: backend
      value: file
    - name: secretsFile
      value: {folder}/secrets.json
    - name: multiValued
      value: "true"
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.redis
  version: v1
"""
CONFIG = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
spec:
  secrets:
    scopes:
      - storeName: localsecrets
        deniedSecrets: [internal-only]
      - storeName: multi
        defaultAccess: deny
        allowedSecrets: [redis, empty]
"""


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with temp_folder() as folder:
        (folder / "secrets.json").write_text(json.dumps({**SECRETS, "app-secrets-path": str(folder / "app.json")}))
        (folder / "app.json").write_text(json.dumps(APP_SECRETS))
        resources, config = write_resources(folder, COMPONENTS.replace("{folder}", str(folder)), CONFIG)
        with run_stack(folder, resources, config) as running:
            yield running


def test_sdk_and_http_read_secrets_with_daprd_codes(stack: Stack) -> None:
    out = stack.app("localsecrets", "db-password", "redis:host", "internal-only", "nope")
    grpc_get, http_get_ = out["grpc"]["get"], out["http"]["get"]
    assert grpc_get["db-password"] == {"data": {"db-password": SECRETS["db-password"]}}
    assert grpc_get["redis:host"] == {"data": {"redis:host": "e2e-host-VALUE-4"}}
    assert http_get_["db-password"] == {"status": 200, "body": {"db-password": SECRETS["db-password"]}}
    denied = 'access denied by policy to get "internal-only" from "localsecrets"'
    assert grpc_get["internal-only"] == {"code": "PERMISSION_DENIED", "details": denied}
    assert http_get_["internal-only"] == {
        "status": 403,
        "body": {"errorCode": "ERR_PERMISSION_DENIED", "message": denied},
    }
    assert grpc_get["nope"]["code"] == "INTERNAL"
    prefix = "failed getting secret with key nope from secret store localsecrets: rpc error: code = NotFound desc = "
    assert grpc_get["nope"]["details"].startswith(prefix)
    assert http_get_["nope"]["status"] == 500
    assert http_get_["nope"]["body"]["errorCode"] == "ERR_SECRET_GET"
    assert http_get_["nope"]["body"]["message"].startswith(prefix)
    # Bulk: every secret the store serves, minus the denied one, in daprd's {name: {name: value}} shape.
    expected_bulk = {
        "db-password": {"db-password": "e2e-db-VALUE-1"},
        "api-key": {"api-key": "e2e-api-VALUE-2"},
        "redis:host": {"redis:host": "e2e-host-VALUE-4"},
        "redis:password": {"redis:password": "e2e-redis-VALUE-5"},
        "app-secrets-path": {"app-secrets-path": str(stack.folder / "app.json")},
    }
    assert out["grpc"]["bulk"] == {"data": expected_bulk}
    assert out["http"]["bulk"] == {"status": 200, "body": expected_bulk}


def test_multi_valued_store_scopes_and_204(stack: Stack) -> None:
    out = stack.app("multi", "redis", "empty", "db-password")
    redis = {"host": "e2e-host-VALUE-4", "password": "e2e-redis-VALUE-5"}
    assert out["grpc"]["get"]["redis"] == {"data": redis}
    assert out["http"]["get"]["redis"] == {"status": 200, "body": redis}
    # A secret with no keys: daprd answers 204 over HTTP and an empty map over gRPC.
    assert out["http"]["get"]["empty"] == {"status": 204, "body": None}
    assert out["grpc"]["get"]["empty"] == {"data": {}}
    # allowedSecrets is non-empty, so everything else is denied.
    assert out["grpc"]["get"]["db-password"]["code"] == "PERMISSION_DENIED"
    assert out["http"]["get"]["db-password"]["status"] == 403
    assert set(out["http"]["bulk"]["body"]) == {"redis", "empty"}


def test_unknown_store(stack: Stack) -> None:
    out = stack.app("nosuch", "db-password")
    message = "failed finding secret store with key nosuch"
    assert out["grpc"]["get"]["db-password"] == {"code": "INVALID_ARGUMENT", "details": message}
    assert out["http"]["get"]["db-password"] == {
        "status": 401,
        "body": {"errorCode": "ERR_SECRET_STORE_NOT_FOUND", "message": message},
    }
    assert out["http"]["bulk"]["status"] == 401


def test_secret_key_ref_and_metadata(stack: Stack) -> None:
    out = stack.app("appsecrets", "feature-flag-key")
    assert out["grpc"]["get"]["feature-flag-key"] == {"data": APP_SECRETS}
    status, body, content_type = http_get(f"{stack.base}/metadata")
    assert status == 200 and content_type.startswith("application/json")
    components = {c["name"]: c for c in json.loads(body)["components"]}
    assert set(components) == {"appsecrets", "localsecrets", "multi"}
    assert components["multi"]["capabilities"] == ["MULTIPLE_KEY_VALUES_PER_SECRET"]
    assert "capabilities" not in components["localsecrets"]  # daprd omits an empty list
    assert components["appsecrets"]["resolvedMetadata"]["secretKeyRef"] == ["secretsFile"]
    assert str(stack.folder / "app.json").encode() not in body
    assert "skipping component" in stack.gateway.log() and "statestore" in stack.gateway.log()


def test_zz_clean_shutdown_and_no_secret_in_logs(stack: Stack) -> None:
    # Runs last in this module: it stops the shared stack.
    socket_path = stack.folder / "secretbridge.sock"
    assert socket_path.exists()
    assert stack.stop() == (0, 0)
    assert not socket_path.exists()
    gateway_log, serve_log = stack.gateway.log(), stack.serve.log()
    assert "gateway stopped" in gateway_log
    assert "NOT daprd" in gateway_log
    for line in gateway_log.splitlines():
        json.loads(line)  # JSON lines only
    for value in VALUES:
        assert value not in gateway_log
        assert value not in serve_log


def test_dev_gateway_help_says_not_daprd() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "secretbridge", "gateway", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert "NOT daprd" in done.stdout and "Production uses daprd" in " ".join(done.stdout.split())
