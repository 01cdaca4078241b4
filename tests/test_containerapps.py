"""The `containerapps` backend's secret volume, through the socket as daprd uses it.

Volumes are real directories in the layout kubelet's atomic writer produces (and a
plain layout of regular files); nothing about the filesystem is mocked.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc
import pytest
import yaml
from secretbridge.backends import COMMON_PROPERTIES, properties_for
from secretbridge.backends.containerapps import ContainerAppsStore
from secretbridge.core.metadata import markdown_table, parse_metadata

from tests.support import Bridge


class AtomicVolume:
    """Writes a folder the way kubelet's atomic writer updates a Secret volume.

    Each `write` puts the whole payload into a fresh `..<timestamp>` folder, points a
    `..data_tmp` link at it, renames that over `..data` (the one atomic step), then adds the
    top-level `name -> ..data/name` links for new names, removes those of names that are gone,
    and deletes the previous timestamped folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._generation = 0

    def write(self, payload: Mapping[str, str | bytes]) -> None:
        self._generation += 1
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S") + f".{time.monotonic_ns()}{self._generation}"
        fresh = self.root / f"..{stamp}"
        fresh.mkdir()
        for path, value in payload.items():
            target = fresh / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(value.encode() if isinstance(value, str) else value)
            target.chmod(0o644)
        data = self.root / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        tmp = self.root / "..data_tmp"
        os.symlink(fresh.name, tmp)
        os.rename(tmp, data)
        tops = {path.split("/")[0] for path in payload}
        for top in tops:
            link = self.root / top
            if not os.path.lexists(link):
                os.symlink(f"..data/{top}", link)
        for entry in self.root.iterdir():
            if entry.name.startswith("..") or entry.name in tops:
                continue
            if entry.is_symlink() and os.readlink(entry).startswith("..data/"):
                entry.unlink()
        if old is not None:
            shutil.rmtree(self.root / old)


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details() or ""


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record with its structured fields, as the JSON log would carry them."""
    return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)


def eventually(check: Callable[[], bool], within: float = 2.0) -> bool:
    """Poll `check` until it holds or `within` seconds pass (the only timing bound asserted)."""
    deadline = time.monotonic() + within
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


SECRETS = {
    "db-password": "s3cr3t-db-\n",  # a trailing newline is part of the value
    "api-key": "k3y-value",
    "conn": "Server=x;Password=p@ss;",
}


@pytest.fixture
def volume(tmp_path: Path) -> AtomicVolume:
    vol = AtomicVolume(tmp_path / "secrets")
    vol.write(SECRETS)
    return vol


def init(bridge: Bridge, path: Path, **extra: str) -> None:
    bridge.init({"backend": "containerapps", "secretsPath": str(path), **extra})


def test_atomic_writer_layout_is_served_byte_for_byte(bridge: Bridge, volume: AtomicVolume) -> None:
    init(bridge, volume.root)
    assert (volume.root / "..data").is_symlink() and os.readlink(volume.root / "db-password") == "..data/db-password"
    assert bridge.get("db-password") == {"db-password": "s3cr3t-db-\n"}
    assert bridge.get("conn") == {"conn": "Server=x;Password=p@ss;"}
    assert bridge.features() == []
    assert bridge.bulk_get() == {name: {name: value} for name, value in SECRETS.items()}
    assert bridge.bulk_get({"maxresults": "2"}) == {
        "api-key": {"api-key": "k3y-value"}, "conn": {"conn": "Server=x;Password=p@ss;"}
    }


def test_plain_layout_of_regular_files(bridge: Bridge, tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    (root / "a").write_text("alpha")
    (root / ".hidden").write_text("dot-file")  # a single leading dot is an ordinary file name
    (root / "sub").mkdir()
    (root / "sub" / "inner").write_text("not a secret")
    init(bridge, root, recheckInterval="0s")
    assert bridge.get("a") == {"a": "alpha"}
    assert bridge.get(".hidden") == {".hidden": "dot-file"}
    code, message = code_of(lambda: bridge.get("sub"))
    assert code == grpc.StatusCode.NOT_FOUND and "directory" in message
    assert bridge.bulk_get() == {".hidden": {".hidden": "dot-file"}, "a": {"a": "alpha"}}
    # A whole-file replacement (write elsewhere, rename over) is picked up without a restart.
    (root / "a.tmp").write_text("alpha-2")
    os.rename(root / "a.tmp", root / "a")
    assert bridge.get("a") == {"a": "alpha-2"}


def test_a_data_swap_shows_new_and_changed_secrets_and_drops_removed_ones(
    bridge: Bridge, volume: AtomicVolume
) -> None:
    init(bridge, volume.root)
    assert bridge.get("api-key") == {"api-key": "k3y-value"}
    volume.write({"db-password": "rotated", "api-key": "k3y-value", "brand-new": "fresh"})
    assert eventually(lambda: bridge.get("db-password") == {"db-password": "rotated"})
    assert eventually(lambda: bridge.get("brand-new") == {"brand-new": "fresh"})
    assert code_of(lambda: bridge.get("conn"))[0] == grpc.StatusCode.NOT_FOUND
    assert eventually(lambda: set(bridge.bulk_get()) == {"api-key", "brand-new", "db-password"})


def test_a_secret_is_visible_as_soon_as_data_is_swapped_before_its_link_exists(
    bridge: Bridge, volume: AtomicVolume
) -> None:
    init(bridge, volume.root, recheckInterval="0s")
    # Between the rename of ..data and the creation of the top-level link, kubelet's writer has
    # the new secret only under ..data; serve it from there.
    fresh = volume.root / "..manual"
    fresh.mkdir()
    for name, value in {**SECRETS, "late": "arrived"}.items():
        (fresh / name).write_text(value)
    os.symlink(fresh.name, volume.root / "..data_tmp")
    os.rename(volume.root / "..data_tmp", volume.root / "..data")
    assert not os.path.lexists(volume.root / "late")
    assert bridge.get("late") == {"late": "arrived"}
    assert bridge.bulk_get()["late"] == {"late": "arrived"}


def test_reads_racing_with_swaps_never_see_a_mixture(bridge: Bridge, volume: AtomicVolume) -> None:
    init(bridge, volume.root, recheckInterval="0s")  # every read looks at ..data
    for round_ in range(30):
        value = f"v{round_}"
        volume.write({"a": value, "b": value})
        data = bridge.bulk_get()
        assert data["a"]["a"] == data["b"]["b"] == value
        assert bridge.get("a") == {"a": value}


async def test_a_swap_is_served_within_recheck_interval_without_looking_on_every_read(
    volume: AtomicVolume, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "p").write_text("one")
    os.utime(plain / "p", (time.time() - 10, time.time() - 10))  # settled: remembered by its stat
    for root, name, old, new in ((volume.root, "api-key", "k3y-value", "k3y-2"), (plain, "p", "one", "two")):
        metadata = parse_metadata((*COMMON_PROPERTIES, *ContainerAppsStore.properties),
                                  {"backend": "containerapps", "secretsPath": str(root)})
        store = ContainerAppsStore(metadata, instance="t")
        now = [100.0]

        def clock(now: list[float] = now) -> float:
            return now[0]

        store.recheck.clock = clock
        await store.open()
        assert store.read_now(name) == {name: old}
        if root == plain:
            staged = plain / "p.new"
            staged.write_text(new)
            os.replace(staged, plain / "p")
        else:
            volume.write({**SECRETS, "api-key": new})
        now[0] += 0.5
        assert store.read_now(name) == {name: old}  # within the interval: what was read, no readlink or stat
        now[0] += 0.6
        assert store.read_now(name) == {name: new}
        assert await store.get(name) == {name: new}


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../x", "'/'"),
        ("/etc/passwd", "'/'"),
        ("a/b", "'/'"),
        ("..data", "'..'"),
        ("..2024_01_01", "'..'"),
        ("...", "'..'"),
        (".", "directories"),
        ("..", "directories"),
        ("bad\x00name", "NUL"),
        ("bell\x07", "U+0007"),
        ("line\nbreak", "U+000A"),
        ("del\x7f", "U+007F"),
        ("c1\x85", "U+0085"),
        ("x" * 256, "255 bytes"),
    ],
)
def test_hostile_names_are_refused_before_the_filesystem(
    bridge: Bridge, volume: AtomicVolume, name: str, why: str
) -> None:
    init(bridge, volume.root)
    code, message = code_of(lambda: bridge.get(name))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert why in message or ("NUL" in why and "NUL" in message)


def test_symlinks_leaving_the_volume_are_never_followed(
    bridge: Bridge, volume: AtomicVolume, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private").write_text("outside-value-never-served")
    os.symlink(outside / "private", volume.root / "absolute-escape")
    os.symlink("../outside/private", volume.root / "relative-escape")
    os.symlink("db-password", volume.root / "alias")  # stays inside: fine
    os.symlink(str(outside), volume.root / "dir-escape")
    init(bridge, volume.root)
    for name in ("absolute-escape", "relative-escape"):
        code, message = code_of(lambda name=name: bridge.get(name))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert name in message and "outside secretsPath" in message
        assert "outside-value-never-served" not in message
    assert code_of(lambda: bridge.get("dir-escape"))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert bridge.get("alias") == {"alias": "s3cr3t-db-\n"}
    every = bridge.bulk_get()
    assert set(every) == {*SECRETS, "alias"}
    assert "absolute-escape" in logged(caplog) and "relative-escape" in logged(caplog)
    assert "outside-value-never-served" not in logged(caplog)


def test_a_data_link_pointing_outside_serves_nothing(bridge: Bridge, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x").write_text("not-yours")
    root = tmp_path / "vol"
    root.mkdir()
    os.symlink(str(outside), root / "..data")
    os.symlink("..data/x", root / "x")
    init(bridge, root)
    assert code_of(lambda: bridge.get("x"))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert bridge.bulk_get() == {}


def test_odd_entries_are_not_secrets(bridge: Bridge, volume: AtomicVolume) -> None:
    os.mkfifo(volume.root / "fifo")  # opening it must not hang the store
    os.symlink("loop", volume.root / "loop")
    os.symlink("missing-target", volume.root / "dangling")
    (volume.root / "weird\x01name").write_text("w")
    init(bridge, volume.root)
    assert code_of(lambda: bridge.get("fifo"))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: bridge.get("loop"))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: bridge.get("dangling"))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: bridge.get("nope"))[0] == grpc.StatusCode.NOT_FOUND
    assert set(bridge.bulk_get()) == set(SECRETS)


def test_sub_directories_from_item_paths_are_not_secrets(bridge: Bridge, tmp_path: Path) -> None:
    volume = AtomicVolume(tmp_path / "nested")
    volume.write({"top": "t", "folder/inner": "i"})
    init(bridge, volume.root)
    code, message = code_of(lambda: bridge.get("folder"))
    assert code == grpc.StatusCode.NOT_FOUND and "directory" in message
    assert bridge.bulk_get() == {"top": {"top": "t"}}


def test_values_are_never_trimmed_and_binaryish_utf8_is_served(bridge: Bridge, tmp_path: Path) -> None:
    volume = AtomicVolume(tmp_path / "v")
    volume.write({
        "newline": "line\n",
        "crlf": "dos\r\n\r\n",
        "spaces": "  padded  ",
        "controls": "\x00\x01\x07\x1b[0m",
        "unicode": "pässwörd-ключ-🔑",
        "empty": "",
    })
    init(bridge, volume.root)
    assert bridge.get("newline") == {"newline": "line\n"}
    assert bridge.get("crlf") == {"crlf": "dos\r\n\r\n"}
    assert bridge.get("spaces") == {"spaces": "  padded  "}
    assert bridge.get("controls") == {"controls": "\x00\x01\x07\x1b[0m"}
    assert bridge.get("unicode") == {"unicode": "pässwörd-ключ-🔑"}
    assert bridge.get("empty") == {"empty": ""}


def test_non_utf8_files_are_refused_by_name_and_left_out_of_bulk(
    bridge: Bridge, volume: AtomicVolume, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    volume.write({**SECRETS, "binary": b"\xff\xfe\x00raw-bytes-\x80"})
    init(bridge, volume.root)
    code, message = code_of(lambda: bridge.get("binary"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "'binary'" in message and "not UTF-8 text" in message
    assert "raw-bytes" not in message
    assert set(bridge.bulk_get()) == set(SECRETS)
    assert "'binary'" in logged(caplog) and "raw-bytes" not in logged(caplog)


def test_a_one_mebibyte_value_is_served(bridge: Bridge, tmp_path: Path) -> None:
    volume = AtomicVolume(tmp_path / "big")
    value = ("0123456789abcdef" * 65536)[: 1 << 20]
    volume.write({"big": value})
    init(bridge, volume.root)
    assert bridge.get("big") == {"big": value}


def test_multi_valued_files_holding_json_objects(bridge: Bridge, tmp_path: Path) -> None:
    volume = AtomicVolume(tmp_path / "mv")
    volume.write({
        "conn": json.dumps({"host": "db", "port": 5432, "tls": True, "opts": {"a": 1}, "none": None}),
        "plain": "just text\n",
        "array": "[1, 2]",
    })
    init(bridge, volume.root, multiValued="true")
    assert bridge.features() == ["MULTIPLE_KEY_VALUES_PER_SECRET"]
    assert bridge.get("conn") == {"host": "db", "port": "5432", "tls": "true", "opts": '{"a":1}', "none": "null"}
    assert bridge.get("plain") == {"plain": "just text\n"}
    assert bridge.get("array") == {"array": "[1, 2]"}
    assert bridge.bulk_get()["conn"]["host"] == "db"


def test_single_valued_json_is_served_as_text(bridge: Bridge, tmp_path: Path) -> None:
    volume = AtomicVolume(tmp_path / "sv")
    volume.write({"conn": '{"host": "db"}'})
    init(bridge, volume.root)
    assert bridge.features() == []
    assert bridge.get("conn") == {"conn": '{"host": "db"}'}


def test_allowed_and_denied_secrets_filter_gets_and_bulk(bridge: Bridge, volume: AtomicVolume) -> None:
    init(bridge, volume.root, allowedSecrets="db-password,api-key", deniedSecrets="api-key")
    assert bridge.get("db-password") == {"db-password": "s3cr3t-db-\n"}
    assert code_of(lambda: bridge.get("api-key"))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: bridge.get("conn"))[0] == grpc.StatusCode.PERMISSION_DENIED
    assert bridge.bulk_get() == {"db-password": {"db-password": "s3cr3t-db-\n"}}


def test_version_requests_are_refused(bridge: Bridge, volume: AtomicVolume) -> None:
    init(bridge, volume.root)
    code, message = code_of(lambda: bridge.get("api-key", {"version_id": "1"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "version_id" in message


def test_init_fails_naming_secrets_path(bridge: Bridge, tmp_path: Path) -> None:
    code, message = code_of(lambda: init(bridge, tmp_path / "missing"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "secretsPath" in message and "does not exist" in message
    (tmp_path / "file").write_text("x")
    code, message = code_of(lambda: init(bridge, tmp_path / "file"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "secretsPath" in message and "not a directory" in message
    # An instance whose Init failed serves nothing.
    assert code_of(lambda: bridge.get("x"))[0] == grpc.StatusCode.FAILED_PRECONDITION


def test_bad_metadata_is_refused_by_name(bridge: Bridge, volume: AtomicVolume) -> None:
    code, message = code_of(lambda: init(bridge, volume.root, resolveKeyVaultReferences="perhaps"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "resolveKeyVaultReferences" in message
    code, message = code_of(lambda: init(bridge, volume.root, keyVaultReferenceHosts="https://x/y"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "keyVaultReferenceHosts" in message


def test_references_are_served_literally_when_resolution_is_off(bridge: Bridge, tmp_path: Path) -> None:
    volume = AtomicVolume(tmp_path / "r")
    literal = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/db)\n"
    volume.write({"ref": literal})
    init(bridge, volume.root, resolveKeyVaultReferences="false")
    assert bridge.get("ref") == {"ref": literal}


@pytest.mark.parametrize(
    ("literal", "code", "why"),
    [
        ("@Microsoft.KeyVault(SecretUri=https://evil.example.com/secrets/db)", "PERMISSION_DENIED",
         "evil.example.com"),
        ("@Microsoft.KeyVault(SecretUri=https://127.0.0.1:9/secrets/db)", "PERMISSION_DENIED", "127.0.0.1:9"),
        ("@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net.evil.io/secrets/db)", "PERMISSION_DENIED",
         "evil.io"),
        ("@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net:8443/secrets/db)", "PERMISSION_DENIED",
         "8443"),
        ("@Microsoft.KeyVault(SecretUri=http://kv.vault.azure.net/secrets/db)", "FAILED_PRECONDITION",
         "malformed"),
        ("@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/db", "FAILED_PRECONDITION",
         "malformed"),
        ("@Microsoft.KeyVault(VaultName=kv)", "FAILED_PRECONDITION", "malformed"),
        ("@microsoft.keyvault(nonsense)", "FAILED_PRECONDITION", "malformed"),
    ],
)
def test_unusable_references_are_refused_and_never_served_literally(
    strict_bridge: Bridge, tmp_path: Path, literal: str, code: str, why: str
) -> None:
    bridge = strict_bridge
    volume = AtomicVolume(tmp_path / "r")
    volume.write({"ref": literal, "ok": "fine"})
    init(bridge, volume.root)
    status, message = code_of(lambda: bridge.get("ref"))
    assert status.name == code
    assert "'ref'" in message and why in message
    assert literal not in message
    status, message = code_of(lambda: bridge.bulk_get())
    assert status.name == code and "'ref'" in message


def test_the_docs_table_and_the_component_yaml_match_the_declarations(bridge: Bridge, volume: AtomicVolume) -> None:
    repo = Path(__file__).resolve().parent.parent
    own = [p for p in properties_for(ContainerAppsStore) if p not in COMMON_PROPERTIES]
    docs = (repo / "docs" / "containerapps.md").read_text()
    assert markdown_table(own) in docs
    assert markdown_table(COMMON_PROPERTIES) in docs
    component = yaml.safe_load((repo / "components" / "containerapps" / "containerapps.yaml").read_text())
    assert component["spec"]["type"] == "secretstores.secretbridge"
    metadata = {item["name"]: item["value"] for item in component["spec"]["metadata"]}
    metadata["secretsPath"] = str(volume.root)  # the example names /mnt/secrets; Init it on a real folder
    bridge.init(metadata)
    assert bridge.get("api-key") == {"api-key": "k3y-value"}


def test_a_volume_that_disappears_after_init_is_a_precondition_failure(bridge: Bridge, volume: AtomicVolume) -> None:
    init(bridge, volume.root)
    shutil.rmtree(volume.root)
    code, message = code_of(lambda: bridge.get("api-key"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "secretsPath" in message
    code, message = code_of(lambda: bridge.bulk_get())
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "secretsPath" in message


def test_a_symlink_into_a_sibling_folder_sharing_the_volumes_name_prefix_is_refused(
    bridge: Bridge, volume: AtomicVolume, caplog: pytest.LogCaptureFixture
) -> None:
    # `<x>/secrets-other` starts with the text `<x>/secrets` but is outside the volume `<x>/secrets`.
    caplog.set_level(logging.DEBUG)
    sibling = volume.root.parent / (volume.root.name + "-other")
    sibling.mkdir()
    (sibling / "private").write_text("sibling-value-never-served")
    os.symlink(sibling / "private", volume.root / "sibling-absolute")
    os.symlink(f"../{sibling.name}/private", volume.root / "sibling-relative")
    init(bridge, volume.root)
    for name in ("sibling-absolute", "sibling-relative"):
        code, message = code_of(lambda name=name: bridge.get(name))
        assert code == grpc.StatusCode.PERMISSION_DENIED, message
        assert "outside secretsPath" in message and "sibling-value-never-served" not in message
    assert set(bridge.bulk_get()) == set(SECRETS)
    assert "sibling-value-never-served" not in logged(caplog)
