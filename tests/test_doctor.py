"""`secretbridge doctor` against the doubles: every failing branch, and no value or token printed."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from azure.keyvault.secrets._shared import http_challenge_cache
from secretbridge.tools.doctor import DoctorOptions, Step, _address_kind, role_fix, run, token_claims

from tests.fakes import FakeKeyVault, FakeManagedIdentity, TestCertificates
from tests.support import Bridge, serve_bridge

pytest_plugins = ("tests.fakes.fixtures",)

OID = "5e1c0d7a-doct-4000-8000-0000000000aa"
VALUES = {"db-password": "doctor-distinctive-value-1", "api-key": "doctor-distinctive-value-2"}


@pytest.fixture
def identity(azure_env: pytest.MonkeyPatch) -> Iterator[FakeManagedIdentity]:
    """A managed-identity endpoint (Container Apps style) whose tokens are JWTs naming OID."""
    with FakeManagedIdentity(object_id=OID) as mi:
        for name, value in mi.env().items():
            azure_env.setenv(name, value)
        yield mi


@pytest.fixture
def vault(kv_certs: TestCertificates, identity: FakeManagedIdentity) -> Iterator[FakeKeyVault]:
    http_challenge_cache.clear()
    with FakeKeyVault(kv_certs, identity=identity) as kv:
        for name, value in VALUES.items():
            kv.set_secret(name, value)
        yield kv


def component(folder: Path, name: str, **metadata: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": name},
        "spec": {"type": "secretstores.secretbridge", "version": "v1",
                 "metadata": [{"name": k, "value": v} for k, v in metadata.items()]},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def keyvault(kv: FakeKeyVault, **extra: str) -> dict[str, str]:
    return {"backend": "keyvault", "vaultUri": kv.url, "disableChallengeResourceVerification": "true", **extra}


Doctor = Callable[..., tuple[int, list[Step]]]


@pytest.fixture
def doctor(tmp_path: Path, azure_env: pytest.MonkeyPatch) -> Iterator[Doctor]:
    """Runs the doctor in-process on tmp_path/components, in text and in JSON, and checks that
    neither output holds a secret value, a token or the identity header of any double."""
    doubles: list[FakeManagedIdentity] = []
    # The operator's allow list, as `serve` would have it: the fakes' host and the hosts these tests name.
    azure_env.setenv("SECRETBRIDGE_ALLOW_VAULT_HOSTS", "127.0.0.1,kv-both.invalid,kv-doctor.invalid")

    def run_doctor(*identities: FakeManagedIdentity, **options: object) -> tuple[int, list[Step]]:
        doubles.extend(identities)
        opts = DoctorOptions(resources=[tmp_path / "components"], **{"timeout": 3.0, **options})  # type: ignore[arg-type]
        text, raw = io.StringIO(), io.StringIO()
        status = run(opts, out=text)
        assert run(opts, as_json=True, out=raw) == status
        steps = [Step(**s) for s in json.loads(raw.getvalue())]
        output = text.getvalue() + raw.getvalue()
        forbidden = [*VALUES.values(), "doctor-distinctive-reference-target", "doctor-plain-volume-value"]
        for mi in doubles:
            forbidden += [mi.identity_header, *mi.issued()]
        for item in forbidden:
            assert item not in output
        for step in steps:  # one line per step in the text form, each with its verdict
            assert f"{step.verdict:<4}  {step.component}  {step.step}: " in text.getvalue()
        return status, steps

    yield run_doctor


def by_step(steps: list[Step], component: str | None = None) -> dict[str, Step]:
    return {s.step: s for s in steps if component is None or s.component == component}


# -- Key Vault ------------------------------------------------------------------------------------


def test_a_usable_vault_passes_every_step_and_names_the_principal(
    tmp_path: Path, vault: FakeKeyVault, identity: FakeManagedIdentity, doctor: Doctor
) -> None:
    component(tmp_path / "components", "kv", **keyvault(vault))
    status, steps = doctor(identity)
    found = by_step(steps)
    assert status == 0
    assert list(found) == ["metadata", "credential", "token", "dns", "tcp", "tls", "list", "read"]
    assert all(s.verdict == "ok" for s in steps), steps
    assert "127.0.0.1 (loopback address)" in found["dns"].detail
    assert "SSL_CERT_FILE=" in found["tls"].detail
    assert "IDENTITY_ENDPOINT=" in found["credential"].detail and "IDENTITY_HEADER set" in found["credential"].detail
    assert "system-assigned managed identity" in found["credential"].detail
    assert f"object id {OID}" in found["token"].detail
    assert "'api-key'" in found["read"].detail  # the first listed secret


def test_the_token_endpoint_down_fails_the_token_step(
    tmp_path: Path, vault: FakeKeyVault, identity: FakeManagedIdentity, doctor: Doctor
) -> None:
    component(tmp_path / "components", "kv", **keyvault(vault))
    identity.go_down()
    status, steps = doctor(identity)
    token = by_step(steps)["token"]
    assert status == 1 and token.verdict == "fail"
    assert f"connection refused by 127.0.0.1:{identity.port}" in token.detail
    assert "az containerapp identity assign" in token.fix
    assert "list" not in by_step(steps)


def test_the_token_endpoint_refusing_an_unknown_identity(
    tmp_path: Path, kv_certs: TestCertificates, azure_env: pytest.MonkeyPatch, doctor: Doctor
) -> None:
    with FakeManagedIdentity(user_assigned=["attached-id"], object_id=OID) as mi, \
            FakeKeyVault(kv_certs, identity=mi) as kv:
        for name, value in mi.env().items():
            azure_env.setenv(name, value)
        component(tmp_path / "components", "kv", **keyvault(kv, azureClientId="not-attached-id"))
        status, steps = doctor(mi)
    token = by_step(steps)["token"]
    assert status == 1 and token.verdict == "fail"
    assert "not-attached-id" in token.detail and "not-attached-id" in token.fix
    assert "user-assigned managed identity" in by_step(steps)["credential"].detail


def test_a_403_from_an_rbac_vault_prints_the_role_assignment(
    tmp_path: Path, vault: FakeKeyVault, identity: FakeManagedIdentity, doctor: Doctor
) -> None:
    component(tmp_path / "components", "kv", **keyvault(vault))
    vault.forbid()
    status, steps = doctor(identity)
    listing = by_step(steps)["list"]
    assert status == 1 and listing.verdict == "fail" and "403" in listing.detail
    assert listing.fix == role_fix(vault.url, OID, access_policy=False)
    assert f'az role assignment create --role "Key Vault Secrets User" --assignee-object-id {OID} --scope' \
        in listing.fix


def test_a_403_from_an_access_policy_vault_says_so(
    tmp_path: Path, vault: FakeKeyVault, identity: FakeManagedIdentity, doctor: Doctor
) -> None:
    component(tmp_path / "components", "kv", **keyvault(vault))
    vault.forbid(access_policy=True)
    status, steps = doctor(identity)
    listing = by_step(steps)["list"]
    assert status == 1 and listing.verdict == "fail"
    assert "access policies" in listing.detail and "access policies" in listing.fix
    assert f"az keyvault set-policy --name <vault-name> --object-id {OID} --secret-permissions get list" \
        in listing.fix


def test_a_missing_named_secret_is_a_404_not_a_permission_problem(
    tmp_path: Path, vault: FakeKeyVault, identity: FakeManagedIdentity, doctor: Doctor
) -> None:
    component(tmp_path / "components", "kv", **keyvault(vault))
    status, steps = doctor(identity, secret="no-such-secret")
    read = by_step(steps)["read"]
    assert read.verdict == "warn" and "'no-such-secret' was not found" in read.detail
    assert by_step(steps)["list"].verdict == "ok" and status == 0


def test_the_first_listed_secret_is_read_under_key_prefix(
    tmp_path: Path, vault: FakeKeyVault, identity: FakeManagedIdentity, doctor: Doctor
) -> None:
    vault.set_secret("staging-db-password", "doctor-distinctive-value-1")
    component(tmp_path / "components", "kv", **keyvault(vault, keyPrefix="staging-"))
    status, steps = doctor(identity)
    assert status == 0 and "'db-password'" in by_step(steps)["read"].detail


def test_credential_and_host_are_both_reported(tmp_path: Path, identity: FakeManagedIdentity, doctor: Doctor) -> None:
    component(tmp_path / "components", "kv", backend="keyvault", vaultUri="https://kv-both.invalid",
              disableChallengeResourceVerification="true")
    identity.go_down()
    status, steps = doctor(identity)
    assert status == 1
    assert by_step(steps)["token"].verdict == by_step(steps)["dns"].verdict == "fail"


def test_a_property_from_a_secret_reference_is_flagged(
    tmp_path: Path, vault: FakeKeyVault, identity: FakeManagedIdentity, doctor: Doctor
) -> None:
    path = component(tmp_path / "components", "kv", **keyvault(vault))
    document = yaml.safe_load(path.read_text())
    document["spec"]["metadata"].append({"name": "azureClientId", "secretKeyRef": {"name": "ids", "key": "cid"}})
    path.write_text(yaml.safe_dump(document))
    _, steps = doctor(identity)
    metadata = by_step(steps)["metadata"]
    assert metadata.verdict == "warn" and "azureClientId" in metadata.detail and "secretKeyRef" in metadata.detail


def test_a_token_the_vault_refuses_is_a_401(
    tmp_path: Path, kv_certs: TestCertificates, identity: FakeManagedIdentity, doctor: Doctor
) -> None:
    http_challenge_cache.clear()
    with FakeManagedIdentity() as elsewhere, FakeKeyVault(kv_certs, identity=elsewhere) as kv:
        component(tmp_path / "components", "kv", **keyvault(kv))
        status, steps = doctor(identity, elsewhere)
    listing = by_step(steps)["list"]
    assert status == 1 and listing.verdict == "fail" and "401" in listing.detail
    assert "another tenant" in listing.fix


def test_a_vault_host_that_does_not_resolve(tmp_path: Path, identity: FakeManagedIdentity, doctor: Doctor) -> None:
    component(tmp_path / "components", "kv", backend="keyvault", vaultUri="https://kv-doctor.invalid",
              disableChallengeResourceVerification="true")
    status, steps = doctor(identity)
    dns = by_step(steps)["dns"]
    assert status == 1 and dns.verdict == "fail"
    assert dns.detail.startswith("cannot resolve host kv-doctor.invalid")
    assert "privatelink.vaultcore.azure.net" in dns.fix
    assert "tcp" not in by_step(steps)


def test_private_link_and_public_answers(tmp_path: Path, identity: FakeManagedIdentity, doctor: Doctor) -> None:
    # The resolver is the doctor's seam: answers as Azure DNS gives them, pointing at loopback (port
    # 443 there refuses, so no packet leaves the machine).
    def private_link(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "prodvault.privatelink.vaultcore.azure.net",
                 ("127.0.0.1", port))]

    component(tmp_path / "components", "kv", backend="keyvault", vaultName="prodvault")
    _, steps = doctor(identity, resolver=private_link)
    dns = by_step(steps)["dns"]
    assert dns.verdict == "ok" and "via CNAME prodvault.privatelink.vaultcore.azure.net" in dns.detail
    assert "(private-link address)" in dns.detail
    assert by_step(steps)["tcp"].verdict == "fail"

    def public(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    _, steps = doctor(identity, resolver=public)
    assert "privatelink.vaultcore.azure.net zone" not in by_step(steps)["dns"].detail  # loopback, not public
    assert _address_kind("10.1.2.3", "") == "private address"
    assert _address_kind("20.50.60.70", "") == "public address"


def test_a_vault_that_refuses_connections(
    tmp_path: Path, vault: FakeKeyVault, identity: FakeManagedIdentity, doctor: Doctor
) -> None:
    component(tmp_path / "components", "kv", **keyvault(vault))
    vault.go_down()
    status, steps = doctor(identity)
    tcp = by_step(steps)["tcp"]
    assert status == 1 and tcp.verdict == "fail" and "connection refused by 127.0.0.1" in tcp.detail


def test_an_untrusted_certificate(
    tmp_path: Path, identity: FakeManagedIdentity, doctor: Doctor
) -> None:
    other_ca = TestCertificates(tmp_path / "other-ca")  # not the CA in SSL_CERT_FILE
    with FakeKeyVault(other_ca, identity=identity) as kv:
        component(tmp_path / "components", "kv", **keyvault(kv))
        status, steps = doctor(identity)
    tls = by_step(steps)["tls"]
    assert status == 1 and tls.verdict == "fail"
    assert f"TLS handshake with 127.0.0.1:{kv.port} failed: certificate not trusted" in tls.detail
    assert "trustme" in tls.detail  # who issued what was presented
    assert "SSL_CERT_FILE" in tls.fix


def test_imds_not_reachable_and_reachable(
    tmp_path: Path, kv_certs: TestCertificates, azure_env: pytest.MonkeyPatch, doctor: Doctor
) -> None:
    # azure_env points SECRETBRIDGE_IMDS_ADDRESS at a closed loopback port; no endpoint variable is set.
    http_challenge_cache.clear()
    with FakeManagedIdentity(object_id=OID) as mi, FakeKeyVault(kv_certs, identity=mi) as kv:
        component(tmp_path / "components", "kv", **keyvault(kv))
        status, steps = doctor(mi)
        credential = by_step(steps)["credential"]
        assert status == 1 and credential.verdict == "fail"
        assert "IMDS is not reachable: connection refused by 127.0.0.1" in credential.detail
        assert "token" not in by_step(steps) and mi.requests == []

        azure_env.setenv("SECRETBRIDGE_IMDS_ADDRESS", f"127.0.0.1:{mi.port}")
        kv.set_secret("on-a-vm", "doctor-distinctive-value-1")
        status, steps = doctor(mi)
    assert status == 0, steps
    assert f"IMDS reachable at 127.0.0.1:{mi.port}" in by_step(steps)["credential"].detail
    assert f"object id {OID}" in by_step(steps)["token"].detail
    assert {r.style for r in mi.requests} == {"imds"}
    assert "AZURE_POD_IDENTITY_AUTHORITY_HOST" not in os.environ


# -- Container Apps volume ------------------------------------------------------------------------


def atomic_volume(folder: Path, files: dict[str, str]) -> Path:
    """The kubelet's atomic-writer layout: ..<timestamp>/ files, ..data -> it, name -> ..data/name."""
    stamp = folder / "..2026_12_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    for name, text in files.items():
        (stamp / name).write_text(text)
        (folder / name).symlink_to(f"..data/{name}")
    (folder / "..data").symlink_to(stamp.name)
    return folder


def test_a_missing_volume(tmp_path: Path, azure_env: pytest.MonkeyPatch, doctor: Doctor) -> None:
    component(tmp_path / "components", "aca", backend="containerapps", secretsPath=str(tmp_path / "nowhere"))
    status, steps = doctor()
    volume = by_step(steps)["volume"]
    assert status == 1 and volume.verdict == "fail" and "does not exist" in volume.detail
    assert "storageType: Secret" in volume.fix


def test_a_volume_with_references(
    tmp_path: Path, vault: FakeKeyVault, identity: FakeManagedIdentity, doctor: Doctor
) -> None:
    vault.set_secret("target", "doctor-distinctive-reference-target")
    netloc = f"127.0.0.1:{vault.port}"
    folder = atomic_volume(tmp_path / "secrets", {
        "plain": "doctor-plain-volume-value",
        "good-ref": f"@Microsoft.KeyVault(SecretUri=https://{netloc}/secrets/target)",
        "gone-ref": f"@Microsoft.KeyVault(SecretUri=https://{netloc}/secrets/no-such-target)",
        "evil-ref": "@Microsoft.KeyVault(SecretUri=https://attacker.example/secrets/x)",
    })
    component(tmp_path / "components", "aca", backend="containerapps", secretsPath=str(folder),
              keyVaultReferenceHosts=netloc)
    status, steps = doctor(identity)
    assert status == 1
    volume = by_step(steps)["volume"]
    assert volume.verdict == "ok" and "atomic writer" in volume.detail and "4 secrets" in volume.detail
    references = {s.detail.split(" ")[1]: s for s in steps if s.step == "reference"}
    assert references["'good-ref'"].verdict == "ok"
    assert references["'gone-ref'"].verdict == "fail" and "not found" in references["'gone-ref'"].detail
    evil = next(s for s in steps if s.step == "reference" and "attacker.example" in s.detail)
    assert evil.verdict == "fail" and "not a Key Vault host" in evil.detail
    assert by_step(steps)["token"].verdict == "ok"


def test_a_plain_volume_without_references(tmp_path: Path, azure_env: pytest.MonkeyPatch, doctor: Doctor) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "one").write_text("doctor-plain-volume-value")
    component(tmp_path / "components", "aca", backend="containerapps", secretsPath=str(folder))
    status, steps = doctor()
    assert status == 0
    assert [s.step for s in steps] == ["metadata", "volume"]  # no identity needed, none asked for
    assert "plain folder" in steps[1].detail and "1 secret" in steps[1].detail


def test_bad_metadata_fails_before_anything_is_contacted(tmp_path: Path, doctor: Doctor) -> None:
    component(tmp_path / "components", "kv", backend="keyvault", vaultName="x")
    status, steps = doctor()
    assert status == 1 and [s.step for s in steps] == ["metadata"] and "vaultName" in steps[0].detail


# -- The socket -----------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Bridge]:
    # As deployed: the socket (0660) belongs to daprd's group (giving it away needs root).
    with serve_bridge(socket_group=65532 if os.geteuid() == 0 else None) as bridge:
        bridge.socket_path.parent.chmod(0o755)
        yield bridge


def test_a_running_server_with_one_instance_initialised_and_one_not(
    tmp_path: Path, served: Bridge, doctor: Doctor
) -> None:
    component(tmp_path / "components", "ready", backend="env", prefix="DOCTOR_")
    component(tmp_path / "components", "absent", backend="env", prefix="DOCTOR_")
    served.init({"backend": "env", "prefix": "DOCTOR_"}, instance="ready")
    status, steps = doctor(socket=served.socket_path)
    shared = by_step(steps, "(socket)")
    assert shared["folder"].verdict == shared["socket"].verdict == shared["reflection"].verdict == "ok"
    assert "dapr.proto.components.v1.SecretStore" in shared["reflection"].detail
    assert by_step(steps, "ready")["instance"].verdict == "ok"
    absent = by_step(steps, "absent")["instance"]
    assert absent.verdict == "fail" and "not initialised" in absent.detail
    assert status == 1


def test_a_socket_daprd_cannot_connect_to(tmp_path: Path, served: Bridge, doctor: Doctor) -> None:
    served.socket_path.chmod(0o600)  # owned by root: daprd's user (65532) has no write bit
    status, steps = doctor(socket=served.socket_path)
    sock = by_step(steps, "(socket)")["socket"]
    assert status == 1 and sock.verdict == "fail"
    assert "uid 65532" in sock.detail and "mode 0600" in sock.detail and "--socket-mode" in sock.fix
    served.socket_path.parent.chmod(0o700)
    status, steps = doctor(socket=served.socket_path)
    assert by_step(steps, "(socket)")["folder"].verdict == "fail"


def test_no_socket_at_the_path(tmp_path: Path, doctor: Doctor) -> None:
    status, steps = doctor(socket=tmp_path / "secretbridge.sock")
    assert status == 1 and by_step(steps)["socket"].verdict == "fail"
    assert "start secretbridge serve before daprd" in by_step(steps)["socket"].fix


def test_a_socket_nothing_serves_on(tmp_path: Path, doctor: Doctor) -> None:
    path = tmp_path / "secretbridge.sock"
    with socket.socket(socket.AF_UNIX) as dead:  # a socket file left behind by a process that died
        dead.bind(str(path))
    path.chmod(0o666)
    tmp_path.chmod(0o755)
    status, steps = doctor(socket=path, timeout=1.0)
    assert status == 1 and by_step(steps)["socket"].verdict == "ok"
    assert by_step(steps)["reflection"].verdict == "fail" and "is secretbridge serve running" in \
        by_step(steps)["reflection"].fix


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to daprd's uid needs root")
@pytest.mark.parametrize(("mode", "group"), [(0o600, 0), (0o660, 0), (0o660, 65532), (0o666, 0)])
def test_the_socket_verdict_matches_what_daprds_user_gets(
    tmp_path: Path, served: Bridge, doctor: Doctor, mode: int, group: int
) -> None:
    os.chown(served.socket_path, 0, group)
    served.socket_path.chmod(mode)
    _, steps = doctor(socket=served.socket_path)
    verdict = by_step(steps, "(socket)")["socket"].verdict
    probe = ("import socket, os; os.setgroups([]); os.setgid(65532); os.setuid(65532); "
             f"s = socket.socket(socket.AF_UNIX); s.connect({str(served.socket_path)!r})")
    connected = subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0
    assert (verdict == "ok") == connected, (oct(mode), group, verdict)


def test_the_command_line_prints_json(tmp_path: Path, vault: FakeKeyVault, identity: FakeManagedIdentity) -> None:
    component(tmp_path / "components", "kv", **keyvault(vault))
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    done = subprocess.run(
        [sys.executable, "-m", "secretbridge", "doctor", "--resources-path", str(tmp_path / "components"),
         "--json", "--secret", "db-password", "--allow-vault-host", "127.0.0.1"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    steps = json.loads(done.stdout)
    assert {tuple(sorted(s)) for s in steps} == {("component", "detail", "fix", "step", "verdict")}
    assert {s["step"]: s["verdict"] for s in steps}["read"] == "ok"
    for secret in [*VALUES.values(), identity.identity_header, *identity.issued()]:
        assert secret not in done.stdout + done.stderr


def test_token_claims_reads_the_payload_only() -> None:
    assert token_claims("not-a-jwt") == {}
    assert token_claims("a.!!!.c") == {}
    assert token_claims("eyJ0eXAiOiJKV1QifQ.eyJvaWQiOiJ4In0.sig") == {"oid": "x"}


def test_a_certificates_secret_also_checks_its_public_parts_and_their_roles(
    tmp_path: Path, vault: FakeKeyVault, identity: FakeManagedIdentity, doctor: Doctor
) -> None:
    from cryptography.hazmat.primitives import serialization

    from tests.fakes.pki import make_chain

    chain = make_chain("ec")
    vault.set_certificate("tls-api", chain.pkcs12_base64(), content_type="application/x-pkcs12",
                          cer=chain.leaf.public_bytes(serialization.Encoding.DER), jwk=None)
    component(tmp_path / "components", "kv", **keyvault(vault))
    status, steps = doctor(identity, secret="tls-api")
    found = by_step(steps)
    assert status == 0 and "a certificate's, with its private key" in found["read"].detail
    assert found["certificate"].verdict == "ok" and "objectType=certificate" in found["certificate"].detail
    # A certificate without its key object: only objectType=key requests would fail, so a warning.
    assert found["key"].verdict == "warn" and "key 'tls-api' was not found" in found["key"].detail
    assert chain.key_pem.splitlines()[1] not in json.dumps([s.__dict__ for s in steps])
    # The roles the public parts need are not the secret's.
    assert '--role "Key Vault Reader"' in role_fix(vault.url, OID, access_policy=False, kind="certificate")
    assert "--key-permissions get" in role_fix(vault.url, OID, access_policy=True, kind="key")
    assert '--role "Key Vault Secrets User"' in role_fix(vault.url, OID, access_policy=False)
