"""daprd's limits: Init within its 5 s budget, answers within its 4 MiB receive limit.

The client here reads up to 64 MiB, so what it sees is secretbridge's own answer; daprd would
read at most 4 MiB and turn anything larger into an opaque 500.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from secretbridge.runtime.server import DAPRD_MAX_RECEIVE_BYTES

from tests.fakes import FakeKeyVault, vault_metadata
from tests.support import Bridge

pytest_plugins = ("tests.fakes.fixtures",)

#: daprd's default initTimeout: dial + Init + Features.
DAPRD_INIT_BUDGET = 5.0


def big_secrets(tmp_path: Path, count: int, size: int) -> Path:
    path = tmp_path / "big.json"
    path.write_text(json.dumps({f"s{i:03d}": chr(ord("a") + i % 26) * size for i in range(count)}))
    return path


def test_a_bulk_answer_daprd_could_not_read_is_a_clear_error(bridge: Bridge, tmp_path: Path) -> None:
    bridge.init({"backend": "file", "secretsFile": str(big_secrets(tmp_path, 10, 512 * 1024))})
    with pytest.raises(grpc.RpcError) as err:
        bridge.bulk_get()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = err.value.details()
    assert "BulkGet" in details and "4 MiB" in details and "maxresults" in details and "daprd" in details
    assert "5.0 MiB" in details and "10 secrets" in details
    # What the message suggests works, and fits what daprd reads.
    fits = int(details.split("about ")[1].split(" ")[0])
    answer = bridge.bulk_get({"maxresults": str(fits)})
    assert len(answer) == fits
    assert sum(len(k) + len(v) for entry in answer.values() for k, v in entry.items()) < DAPRD_MAX_RECEIVE_BYTES


def test_a_bulk_answer_just_under_the_limit_is_sent(bridge: Bridge, tmp_path: Path) -> None:
    bridge.init({"backend": "file", "secretsFile": str(big_secrets(tmp_path, 7, 512 * 1024))})
    assert len(bridge.bulk_get()) == 7


def test_a_single_secret_over_the_limit_is_a_clear_error(bridge: Bridge, tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"huge": "x" * (DAPRD_MAX_RECEIVE_BYTES + 1), "small": "ok"}))
    bridge.init({"backend": "file", "secretsFile": str(path)})
    with pytest.raises(grpc.RpcError) as err:
        bridge.get("huge")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "4 MiB" in err.value.details() and "daprd" in err.value.details()
    assert bridge.get("small") == {"small": "ok"}


def test_fail_fast_init_answers_within_daprds_budget_however_slow_the_vault(
    bridge: Bridge, fake_vault: FakeKeyVault
) -> None:
    fake_vault.set_latency(60)
    # requestTimeout alone would let the check run 30 s, long past daprd's budget.
    metadata = {"backend": "keyvault", **vault_metadata(fake_vault, failFast="true", requestTimeout="30s")}
    with pytest.raises(grpc.RpcError) as err:
        bridge.init(metadata, timeout=DAPRD_INIT_BUDGET)
    # The answer is secretbridge's, not the client giving up at daprd's budget.
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "failFast" in err.value.details() and "Init" in err.value.details()
    with pytest.raises(grpc.RpcError) as after:
        bridge.get("anything")
    assert after.value.code() == grpc.StatusCode.FAILED_PRECONDITION, "a failed Init leaves nothing behind"


def test_init_without_fail_fast_does_not_wait_for_a_slow_vault(bridge: Bridge, fake_vault: FakeKeyVault) -> None:
    fake_vault.set_latency(60)
    bridge.init({"backend": "keyvault", **vault_metadata(fake_vault, requestTimeout="30s")},
                timeout=DAPRD_INIT_BUDGET)
    assert bridge.features() == []
