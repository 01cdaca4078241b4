"""Discovery on a socket folder through reflection v1alpha, against real servers on real sockets."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from secretbridge.gateway.discovery import DiscoveryError, PluggableStore, discover, match

from tests.gateway_support import scripted_store
from tests.stack import temp_folder


async def test_registers_secretstores_by_socket_name_lower_cased() -> None:
    with (
        temp_folder() as folder,
        scripted_store(folder, "MyStore"),
        scripted_store(folder, "statestore", services=("dapr.proto.components.v1.StateStore",)),
    ):
        (folder / "README.txt").write_text("not a socket")
        (folder / "sub").mkdir()
        found = await discover(str(folder))
    assert list(found) == ["secretstores.mystore"]
    store = found["secretstores.mystore"]
    assert store.socket == str(folder / "MyStore.sock")
    assert store.target == f"unix://{folder}/MyStore.sock"


async def test_missing_folder_is_empty(tmp_path: Path) -> None:
    assert await discover(str(tmp_path / "absent")) == {}


async def test_a_dead_socket_fails_discovery_like_daprd() -> None:
    with temp_folder() as folder:
        # A socket file nobody listens on (a stale file left by a crashed component).
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(str(folder / "stale.sock"))
        dead.close()
        with pytest.raises(DiscoveryError, match=r"stale\.sock"):
            await discover(str(folder), timeout=1.0)


@pytest.mark.parametrize(
    ("ctype", "version", "hit"),
    [
        ("secretstores.secretbridge", "v1", True),
        ("SecretStores.SecretBridge", "", True),
        ("secretstores.secretbridge", "v0", True),
        ("secretstores.secretbridge", "v2", False),
        ("secretstores.other", "v1", False),
        ("state.secretbridge", "v1", False),
    ],
)
def test_match_by_type_and_initial_version(ctype: str, version: str, hit: bool) -> None:
    store = PluggableStore("secretstores.secretbridge", "/x.sock")
    assert (match({store.type: store}, ctype, version) is store) is hit
