"""envRef / secretKeyRef resolution before Init, as daprd does it (names logged, never values)."""

from __future__ import annotations

import logging

import pytest
from secretbridge.gateway.components import Component, MetadataItem, SecretKeyRef
from secretbridge.gateway.refs import env_ref_allowed, resolve


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("MY_VAR", True),
        ("APP_API_TOKEN", False),
        ("app_api_token", False),
        ("DAPR_HTTP_PORT", False),
        ("dapr_anything", False),
        ("NOT_DAPR_X", True),
    ],
)
def test_env_ref_denylist(name: str, allowed: bool) -> None:
    assert env_ref_allowed(name) is allowed


async def test_secret_key_ref_picks_key_then_name_and_caches(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    asked: list[tuple[str, dict[str, str]]] = []
    store = {"db": {"db": "db-VALUE", "user": "user-VALUE", "blank": ""}}

    async def getter(name: str, metadata: dict[str, str]) -> dict[str, str]:
        asked.append((name, metadata))
        if name not in store:
            raise RuntimeError(f"rpc error: code = NotFound desc = secret {name} not found")
        return store[name]

    component = Component(
        name="c",
        type="secretstores.x",
        metadata=(
            MetadataItem("a", secret_key_ref=SecretKeyRef("db")),
            MetadataItem("b", secret_key_ref=SecretKeyRef("db", "user")),
            MetadataItem("c", secret_key_ref=SecretKeyRef("db", "blank")),
            MetadataItem("d", secret_key_ref=SecretKeyRef("missing")),
            MetadataItem("e", secret_key_ref=SecretKeyRef("missing", "k")),
            MetadataItem("plain", value="p"),
        ),
        auth_secret_store="s",
    )
    resolved = await resolve(component, getter, environ={})
    assert resolved.properties == {"a": "db-VALUE", "b": "user-VALUE", "c": "", "d": "", "e": "", "plain": "p"}
    assert resolved.from_secrets == ["a", "b"]
    assert resolved.unresolved == ["c", "d", "e"]
    # One call per secret name, failures included; the component's (empty) namespace is sent.
    assert asked == [("db", {"namespace": ""}), ("missing", {"namespace": ""})]
    text = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "db-VALUE" not in text and "user-VALUE" not in text


async def test_without_a_store_refs_stay_empty() -> None:
    component = Component(
        name="c", type="t", metadata=(MetadataItem("a", value="fallback", secret_key_ref=SecretKeyRef("x")),)
    )
    resolved = await resolve(component, None, environ={})
    assert resolved.properties == {"a": "fallback"} and resolved.unresolved == ["a"]
