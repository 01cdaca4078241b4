"""Instances survive a restart of secretbridge: their Init metadata is kept on the socket volume.

daprd sends Init once per Component and never again, so a restarted secretbridge must open its
instances by itself. Every server here is real, on a real socket; a restart is a new server on the
same socket folder, talking to the same kind of client daprd keeps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest
from secretbridge import backends as stores
from secretbridge.runtime.state import STATE_FOLDER, StateStore, split_metadata

from tests.fakes import FakeKeyVault, vault_metadata
from tests.support import Bridge, eventually, serve_bridge, short_tempdir

pytest_plugins = ("tests.fakes.fixtures",)

CLIENT_SECRET = "client-Secret-Value-9f8e7d"
CERT_PASSWORD = "cert-Password-Value-1a2b3c"


@pytest.fixture
def folder() -> Iterator[Path]:
    path = short_tempdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def serving(folder: Path, **options: object) -> AbstractContextManager[Bridge]:
    """One run of secretbridge on `folder`; leaving the block stops it (its state stays)."""
    return serve_bridge(folder=folder, **options)


def state_files(folder: Path) -> list[Path]:
    return sorted((folder / STATE_FOLDER / "secretbridge").glob("*.json"))


def secrets_file(tmp_path: Path, name: str = "s.json", **values: str) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(values or {"db": "v1"}))
    return path


def code_and_details(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()  # type: ignore[operator]
    return err.value.code(), err.value.details()


def test_a_restarted_server_serves_what_was_initialised_before(folder: Path, tmp_path: Path) -> None:
    path = secrets_file(tmp_path, db="v1")
    with serving(folder) as bridge:
        bridge.init({"backend": "file", "secretsFile": str(path), "multiValued": "false"}, instance="local")
    with serving(folder) as bridge:
        assert bridge.get("db", instance="local") == {"db": "v1"}
        assert bridge.features(instance="local") == []
        assert bridge.server is not None and bridge.server.instances.find("local").recovered  # type: ignore[union-attr]


def test_state_is_owner_only_and_holds_no_sensitive_or_unknown_property(folder: Path) -> None:
    with serving(folder) as bridge:
        bridge.init(
            {
                "backend": "keyvault", "vaultName": "my-vault", "azureClientId": "11111111-2222-3333-4444-555555555555",
                "azureTenantId": "tenant", "spnClientSecret": CLIENT_SECRET,
                "azureCertificatePassword": CERT_PASSWORD, "someFutureProperty": "maybe-a-secret",
            },
            instance="sp",
        )
    state_dir = folder / STATE_FOLDER / "secretbridge"
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    [saved] = state_files(folder)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert saved.stat().st_uid == os.geteuid()
    text = saved.read_text()
    assert CLIENT_SECRET not in text and CERT_PASSWORD not in text and "maybe-a-secret" not in text
    body = json.loads(text)
    assert body["metadata"]["vaultName"] == "my-vault"
    assert body["withheld"] == ["azureCertificatePassword", "azureClientSecret"]
    assert "sp" not in saved.name, "file names are hashes: an instance name never picks a path"


def test_an_instance_that_needed_a_secret_property_says_it_needs_a_new_init(folder: Path) -> None:
    with serving(folder) as bridge:
        bridge.init(
            {"backend": "keyvault", "vaultName": "my-vault", "azureClientId": "id", "azureTenantId": "tenant",
             "azureClientSecret": CLIENT_SECRET},
            instance="sp",
        )
    with serving(folder) as bridge:
        code, details = code_and_details(lambda: bridge.get("db", instance="sp"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "azureClientSecret" in details and "new Init from daprd" in details
        assert CLIENT_SECRET not in details
        assert bridge.server is not None
        ready, body = bridge.server.readiness(verbose=True)
        assert ready, "only daprd can fix it: readiness must not take the pod out for it"
        assert body["instances"]["sp"]["state"] == "needs Init"
        assert CLIENT_SECRET not in json.dumps(body)
        # daprd restarting sends Init again: that instance serves once more (here: it is built again).
        bridge.init({"backend": "keyvault", "vaultName": "my-vault", "azureClientSecret": CLIENT_SECRET,
                     "azureClientId": "id", "azureTenantId": "tenant"}, instance="sp")
        assert bridge.server.readiness(verbose=True)[1]["instances"]["sp"]["state"] != "needs Init"


def test_managed_identity_instances_recover_fully(folder: Path, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_secret("db-password", "from-the-vault")
    with serving(folder) as bridge:
        bridge.init({"backend": "keyvault", **vault_metadata(fake_vault)}, instance="vault")
        assert bridge.get("db-password", instance="vault") == {"db-password": "from-the-vault"}
    fake_vault.set_secret("db-password", "rotated")
    with serving(folder) as bridge:
        assert bridge.get("db-password", instance="vault") == {"db-password": "rotated"}


def test_a_re_init_replaces_what_was_kept(folder: Path, tmp_path: Path) -> None:
    first, second = secrets_file(tmp_path, "a.json", db="from-a"), secrets_file(tmp_path, "b.json", db="from-b")
    with serving(folder) as bridge:
        bridge.init({"backend": "file", "secretsFile": str(first)})
        bridge.init({"backend": "file", "secretsFile": str(second)})
    assert len(state_files(folder)) == 1
    with serving(folder) as bridge:
        assert bridge.get("db") == {"db": "from-b"}


def test_a_failed_init_removes_what_was_kept(folder: Path, tmp_path: Path) -> None:
    path = secrets_file(tmp_path)
    with serving(folder) as bridge:
        bridge.init({"backend": "file", "secretsFile": str(path)})
        assert len(state_files(folder)) == 1
        with pytest.raises(grpc.RpcError):
            bridge.init({"backend": "file", "secretsFile": str(tmp_path / "missing.json")})
        assert state_files(folder) == []
    with serving(folder) as bridge:
        code, details = code_and_details(lambda: bridge.get("db"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "not initialised" in details


def test_corrupt_and_foreign_state_files_are_logged_and_skipped(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = secrets_file(tmp_path)
    with serving(folder) as bridge:
        bridge.init({"backend": "file", "secretsFile": str(path)}, instance="good")
        bridge.init({"backend": "file", "secretsFile": str(path)}, instance="truncated")
        bridge.init({"backend": "file", "secretsFile": str(path)}, instance="world-readable")
    by_instance = {json.loads(f.read_text())["instance"]: f for f in state_files(folder)}
    by_instance["truncated"].write_text('{"version": 1, "instance": "trunc')
    by_instance["world-readable"].chmod(0o644)
    (folder / STATE_FOLDER / "secretbridge" / "0123.json").write_bytes(b"\xff\xfe not json")
    with caplog.at_level(logging.WARNING), serving(folder) as bridge:
        assert bridge.get("db", instance="good") == {"db": "v1"}
        for name in ("truncated", "world-readable"):
            code, _ = code_and_details(lambda n=name: bridge.get("db", instance=n))  # type: ignore[misc]
            assert code == grpc.StatusCode.FAILED_PRECONDITION
    ignored = [r for r in caplog.records if r.getMessage() == "instance state file ignored"]
    assert len(ignored) == 3


def test_a_saved_instance_that_cannot_open_again_says_so(folder: Path, tmp_path: Path) -> None:
    path = secrets_file(tmp_path)
    with serving(folder) as bridge:
        bridge.init({"backend": "file", "secretsFile": str(path)})
    path.unlink()
    with serving(folder) as bridge:
        code, details = code_and_details(lambda: bridge.get("db"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "could not be opened again" in details and "secretsFile" in details


def test_no_state_keeps_nothing(folder: Path, tmp_path: Path) -> None:
    path = secrets_file(tmp_path)
    with serving(folder, keep_state=False) as bridge:
        bridge.init({"backend": "file", "secretsFile": str(path)})
    assert not (folder / STATE_FOLDER).exists()
    with serving(folder) as bridge:
        code, _ = code_and_details(lambda: bridge.get("db"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_state_dir_chooses_the_folder(folder: Path, tmp_path: Path) -> None:
    path = secrets_file(tmp_path)
    elsewhere = tmp_path / "kept"
    with serving(folder, state_dir=elsewhere) as bridge:
        bridge.init({"backend": "file", "secretsFile": str(path)})
    assert len(list(elsewhere.glob("*.json"))) == 1 and not (folder / STATE_FOLDER).exists()
    with serving(folder, state_dir=elsewhere) as bridge:
        assert bridge.get("db") == {"db": "v1"}


def test_a_state_folder_owned_by_someone_else_is_not_used(tmp_path: Path) -> None:
    target = tmp_path / "theirs"
    target.mkdir(mode=0o700)
    os.chown(target, 4321, 4321)
    store = StateStore(target)
    with pytest.raises(OSError, match="belongs to uid 4321"):
        store.save("x", {"backend": "file", "secretsFile": "/x"})
    assert store.load() == []


def test_every_secret_bearing_property_is_declared_sensitive() -> None:
    """What `sensitive` leaves out of the state on disk: a property that carries a secret must say so."""
    secret_like = re.compile(r"(secret|password|certificate|token)$", re.IGNORECASE)
    for backend in stores.backend_names():
        for prop in stores.properties_for(stores.store_class(backend)):
            if secret_like.search(prop.name):
                assert prop.sensitive, f"{backend}.{prop.name} carries a secret and must be declared sensitive"


def test_aliases_of_sensitive_properties_are_withheld_too() -> None:
    kept, withheld = split_metadata(
        {"backend": "keyvault", "vaultName": "v", "clientSecret": CLIENT_SECRET, "SPNCERTIFICATEPASSWORD": "p"}
    )
    assert kept == {"backend": "keyvault", "vaultName": "v"}
    assert withheld == ("azureCertificatePassword", "azureClientSecret")


def test_a_call_during_recovery_waits_for_its_instance(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from secretbridge.runtime.instances import Instances
    from secretbridge.runtime.loop import LoopThread
    from secretbridge.runtime.state import Saved

    path = secrets_file(tmp_path, db="v1")
    io = LoopThread().start()
    try:
        instances = Instances()
        todo = instances.plan_recovery([Saved("late", {"backend": "file", "secretsFile": str(path)}, ())])
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(instances.get, "late")  # as a gRPC worker would, before recovery ran
            assert not waiting.done() and instances.recovering() == ["late"]
            io.run(instances.recover(todo), 10)
            assert waiting.result(10).backend == "file"
        assert instances.recovering() == []
        io.run(instances.close_all(), 10)
    finally:
        io.stop()


def test_an_init_during_recovery_wins(tmp_path: Path) -> None:
    from secretbridge.runtime.instances import Instances
    from secretbridge.runtime.loop import LoopThread
    from secretbridge.runtime.state import Saved

    old, new = secrets_file(tmp_path, "old.json", db="old"), secrets_file(tmp_path, "new.json", db="new")
    io = LoopThread().start()
    try:
        instances = Instances()
        todo = instances.plan_recovery([Saved("x", {"backend": "file", "secretsFile": str(old)}, ())])
        io.run(instances.init("x", {"backend": "file", "secretsFile": str(new)}), 10)
        io.run(instances.recover(todo), 10)
        assert io.run(instances.get("x").get("db", None), 10) == {"db": "new"}
        io.run(instances.close_all(), 10)
    finally:
        io.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root (CI runs as root)")
def test_another_user_on_the_socket_volume_cannot_read_the_state(folder: Path, tmp_path: Path) -> None:
    """daprd (uid 65532 in its image) shares the socket folder; it must not read what was kept."""
    path = secrets_file(tmp_path)
    folder.chmod(0o777)  # the socket folder is shared; only the state inside is owner-only
    with serving(folder) as bridge:
        bridge.init({"backend": "file", "secretsFile": str(path)})
    [saved] = state_files(folder)
    pid = os.fork()
    if pid == 0:  # the child becomes daprd's user and tries to read
        try:
            os.setgid(65532)
            os.setuid(65532)
            try:
                saved.read_bytes()
                os._exit(1)
            except PermissionError:
                pass
            try:
                os.listdir(saved.parent)
                os._exit(2)
            except PermissionError:
                os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def names_files(folder: Path) -> list[Path]:
    return sorted((folder / STATE_FOLDER / "secretbridge").glob("*.names"))


def test_held_names_are_kept_owner_only_without_values_and_forgotten_with_the_instance(
    folder: Path, tmp_path: Path, fake_vault: FakeKeyVault
) -> None:
    values = {"db-password": "kept-Value-Never-On-Disk-1", "api-key": "kept-Value-Never-On-Disk-2"}
    for name, value in values.items():
        fake_vault.set_secret(name, value)
    vault = {"backend": "keyvault", **vault_metadata(fake_vault)}
    with serving(folder) as bridge:
        bridge.init(vault, instance="vault")
        for name, value in values.items():
            assert bridge.get(name, instance="vault") == {name: value}
        pinned = fake_vault.set_secret("read-by-version-only", "pinned-Value")
        assert bridge.get("read-by-version-only", instance="vault", metadata={"version_id": pinned}) == {
            "read-by-version-only": "pinned-Value"}
    # A graceful stop keeps them at once; only latest-version names, never a value.
    [kept] = names_files(folder)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    body = kept.read_text()
    assert sorted(json.loads(body)["names"]) == sorted(values)
    for value in values.values():
        assert value not in body
    with serving(folder) as bridge:
        # A re-Init with other metadata starts a new cache: what the old one held is not read again.
        bridge.init({**vault, "cacheTTL": "1m"}, instance="vault")
    assert names_files(folder) == [] and len(state_files(folder)) == 1
    with serving(folder) as bridge, pytest.raises(grpc.RpcError):
        bridge.init({"backend": "file", "secretsFile": str(tmp_path / "missing.json")}, instance="vault")
    assert names_files(folder) == [] and state_files(folder) == []


def test_key_vault_references_are_read_again_after_a_restart(
    folder: Path, tmp_path: Path, fake_vault: FakeKeyVault
) -> None:
    """A Container Apps volume's Key Vault references are resolved behind a cache too: a restart warms it."""
    from tests.test_containerapps import AtomicVolume

    fake_vault.set_secret("db-password", "referenced-Value-1")
    fake_vault.set_secret("never-read", "referenced-Value-2")
    volume = AtomicVolume(tmp_path / "secrets")
    volume.write({name: f"@Microsoft.KeyVault(SecretUri={fake_vault.url}/secrets/{name})"
                  for name in ("db-password", "never-read")})
    metadata = {"backend": "containerapps", "secretsPath": str(volume.root), "maxRetries": "0",
                "keyVaultReferenceHosts": fake_vault.url.split("//", 1)[1], "requestTimeout": "2s"}
    with serving(folder) as bridge:
        bridge.init(metadata, instance="aca")
        assert bridge.get("db-password", instance="aca") == {"db-password": "referenced-Value-1"}
    fake_vault.reset_counters()
    try:
        with serving(folder) as bridge:
            instances = bridge.server.instances  # type: ignore[union-attr]
            assert eventually(lambda: fake_vault.count("get") == 1 and instances.warming() == 0, within=20)
            fake_vault.fail(math.inf)
            assert bridge.get("db-password", instance="aca") == {"db-password": "referenced-Value-1"}
            code, _ = code_and_details(lambda: bridge.get("never-read", instance="aca"))
            assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        fake_vault.fail(0)


def test_a_corrupt_or_world_readable_names_file_starts_the_instance_cold(
    folder: Path, fake_vault: FakeKeyVault, caplog: pytest.LogCaptureFixture
) -> None:
    fake_vault.set_secret("db-password", "cold-Value")
    with serving(folder) as bridge:
        bridge.init({"backend": "keyvault", **vault_metadata(fake_vault)}, instance="vault")
        assert bridge.get("db-password", instance="vault") == {"db-password": "cold-Value"}
    [kept] = names_files(folder)
    for spoil in (lambda: kept.write_text('{"version": 1, "names": ["db-pa'), lambda: kept.chmod(0o644)):
        spoil()
        caplog.clear()
        with caplog.at_level(logging.WARNING), serving(folder) as bridge:
            # Recovered all the same, and serves; it just read nothing ahead.
            assert bridge.get("db-password", instance="vault") == {"db-password": "cold-Value"}
        assert [r.getMessage() for r in caplog.records].count("names file ignored; the instance starts cold") == 1
