"""Names and metadata: every input gets a clear answer, never a crash (UNKNOWN/INTERNAL)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secretbridge.core.errors import InvalidArgument
from secretbridge.core.metadata import Kind, Property, format_duration, parse_duration, parse_metadata

from tests.support import Bridge, serve_bridge

EXPECTED = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED}


@pytest.mark.parametrize(
    ("name", "words"),
    [("", "empty"), ("x" * 1025, "1025 characters"), ("a\x00b", "NUL")],
)
def test_names_no_store_could_hold_are_invalid(bridge: Bridge, tmp_path: Path, name: str, words: str) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"k": "v"}')
    bridge.init({"backend": "file", "secretsFile": str(path)})
    with pytest.raises(grpc.RpcError) as err:
        bridge.get(name)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in err.value.details()
    assert len(err.value.details()) < 400  # a huge name is cut in the message


def test_a_1024_character_name_is_looked_up(bridge: Bridge, tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"n" * 1024: "long"}))
    bridge.init({"backend": "file", "secretsFile": str(path)})
    assert bridge.get("n" * 1024) == {"n" * 1024: "long"}


@pytest.fixture(scope="module")
def hostile_bridge(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One socket, every backend: file, env, keyvault (on the fake vault) and containerapps."""
    from azure.keyvault.secrets._shared import http_challenge_cache

    from tests.fakes import IDENTITY_ENV_VARS, FakeKeyVault, FakeManagedIdentity, TestCertificates, vault_metadata

    root = tmp_path_factory.mktemp("hostile")
    path = root / "s.json"
    path.write_text(json.dumps({"ok": "1", "../x": "dots", "a/b": "slash"}))
    volume = root / "volume"
    volume.mkdir()
    (volume / "ok").write_text("1")
    certs = TestCertificates(root / "tls")
    saved = dict(os.environ)
    try:
        with FakeManagedIdentity() as identity:
            for name in IDENTITY_ENV_VARS:
                os.environ.pop(name, None)
            os.environ.update(identity.env())
            os.environ["SSL_CERT_FILE"] = str(certs.ca_path)
            http_challenge_cache.clear()
            with FakeKeyVault(certs, identity=identity) as vault, serve_bridge() as b:
                vault.set_secret("ok", "1")
                b.init({"backend": "file", "secretsFile": str(path)})
                b.init({"backend": "env", "prefix": "SB_"}, instance="env")
                b.init({"backend": "keyvault", **vault_metadata(vault)}, instance="keyvault")
                b.init({"backend": "containerapps", "secretsPath": str(volume)}, instance="containerapps")
                yield b
    finally:
        os.environ.clear()
        os.environ.update(saved)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=1100) | st.sampled_from(["..", ".", "/etc/passwd", "..data", "a\nb", "\x7f", "ok"]))
def test_any_name_gets_an_answer_or_a_clear_refusal(hostile_bridge: Bridge, name: str) -> None:
    for instance in ("default", "env", "keyvault", "containerapps"):
        try:
            data = hostile_bridge.get(name, instance=instance)
        except grpc.RpcError as err:
            assert err.code() in EXPECTED, (instance, err.code(), err.details())
            assert err.details()
        else:
            assert data, instance


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=8))
def test_any_metadata_map_is_accepted_or_refused_naming_a_property(raw: dict[str, str]) -> None:
    from secretbridge.backends import COMMON_PROPERTIES
    from secretbridge.backends.file import FileStore

    try:
        parsed = parse_metadata((*COMMON_PROPERTIES, *FileStore.properties), {"backend": "file", **raw})
    except InvalidArgument as err:
        assert "metadata property '" in err.message
    else:
        assert parsed["nestedSeparator"]


@given(st.integers(min_value=0, max_value=10**7))
def test_durations_round_trip(ms: int) -> None:
    assert parse_duration(format_duration(ms / 1000)) == pytest.approx(ms / 1000)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1.5s", 1.5),
     ("5", 5), ("300", 300)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1.5", "s", "5 s", "-1s", "1d", "1h-"])
def test_bad_durations_are_refused_naming_the_property(text: str) -> None:
    prop = Property("cacheTTL", "d", Kind.DURATION, default=30.0)
    if text == "":
        assert parse_metadata((prop,), {"cacheTTL": text})["cacheTTL"] == 30.0  # empty means unset
        return
    with pytest.raises(InvalidArgument, match="'cacheTTL' must be a duration"):
        parse_metadata((prop,), {"cacheTTL": text})


def test_property_names_match_case_insensitively_and_unknown_ones_are_reported() -> None:
    props = (Property("secretsFile", "f", required=True), Property("multiValued", "m", Kind.BOOL, default=False))
    parsed = parse_metadata(props, {"SECRETSFILE": "/x", "multivalued": "TRUE", "mutliValued": "true"})
    assert parsed["secretsFile"] == "/x" and parsed["multiValued"] is True
    assert parsed.unknown == ("mutliValued",)
    assert parsed.suggestions == {"mutliValued": "multiValued"}


@pytest.mark.parametrize("text", ["1", "t", "T", "true", "TRUE", "y", "Yes", "on", "ON", " true "])
def test_dapr_truthy_strings_are_true(text: str) -> None:
    prop = Property("failFast", "f", Kind.BOOL, default=False)
    assert parse_metadata((prop,), {"failFast": text})["failFast"] is True


@pytest.mark.parametrize("text", ["0", "f", "F", "false", "False", "n", "NO", "off"])
def test_their_opposites_are_false(text: str) -> None:
    prop = Property("failFast", "f", Kind.BOOL, default=True)
    assert parse_metadata((prop,), {"failFast": text})["failFast"] is False


@pytest.mark.parametrize("text", ["maybe", "2", "tru", "enabled"])
def test_other_boolean_text_is_refused_naming_the_property(text: str) -> None:
    prop = Property("failFast", "f", Kind.BOOL, default=False)
    with pytest.raises(InvalidArgument, match="'failFast' must be a boolean"):
        parse_metadata((prop,), {"failFast": text})


def test_the_first_alias_in_declaration_order_wins_with_a_warning() -> None:
    prop = Property("azureClientId", "c", aliases=("spnClientId", "clientId"))
    # Written in the opposite order: the declaration's order decides, not the YAML's.
    parsed = parse_metadata((prop,), {"clientId": "third", "spnClientId": "second"})
    assert parsed["azureClientId"] == "second"
    ((name, warning),) = parsed.warnings
    assert name == "azureClientId"
    assert "'spnClientId' is used" in warning and "'clientId'" in warning
    # An empty value is "not set", so the next spelling is used.
    assert parse_metadata((prop,), {"azureClientId": "", "clientId": "c"})["azureClientId"] == "c"


def test_a_deprecated_property_warns_naming_its_replacement() -> None:
    prop = Property("allowExpired", "a", Kind.BOOL, default=False, deprecated="use refuseExpired")
    parsed = parse_metadata((prop,), {"allowExpired": "true"})
    assert parsed["allowExpired"] is True
    assert parsed.warnings == (("allowExpired", "metadata property 'allowExpired' is deprecated: use refuseExpired"),)


def test_a_property_given_twice_is_refused() -> None:
    props = (Property("secretsFile", "f"),)
    with pytest.raises(InvalidArgument, match="given twice"):
        parse_metadata(props, {"secretsFile": "/a", "secretsfile": "/b"})


def test_sensitive_values_are_never_echoed() -> None:
    props = (Property("azureClientSecret", "s", Kind.BOOL, sensitive=True),)
    with pytest.raises(InvalidArgument) as err:
        parse_metadata(props, {"azureClientSecret": "hunter2-secret"})
    assert "hunter2" not in err.value.message


def test_init_logs_unknown_properties_with_a_suggestion(
    bridge: Bridge, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"k": "v"}')
    with caplog.at_level(logging.WARNING):
        bridge.init({"backend": "file", "secretsFile": str(path), "nestedSeperator": "."})
    record = next(r for r in caplog.records if getattr(r, "property", None) == "nestedSeperator")
    assert "did you mean 'nestedSeparator'" in record.getMessage()
