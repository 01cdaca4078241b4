"""Certificates and keys in the shapes apps load, from every store that holds them.

Real certificates (tests/fakes/pki.py: a leaf under an intermediate under a root, RSA and EC), the
real server over its socket, the real azure SDK against the fake vault, and the file and Container
Apps stores on real files: the same PEM and the same `tls.*` keys whatever the store.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from secretbridge.core import certificates
from secretbridge.core.certificates import CertificateProblem

from tests.fakes import FakeKeyVault, vault_metadata
from tests.fakes.pki import Chain, make_chain, pem_of
from tests.support import Bridge

pytest_plugins = ("tests.fakes.fixtures",)

PKCS12 = certificates.PKCS12_TYPE
PEM_FILE = certificates.PEM_TYPE


@pytest.fixture(scope="module")
def rsa_chain() -> Chain:
    return make_chain("rsa")


@pytest.fixture(scope="module")
def ec_chain() -> Chain:
    return make_chain("ec", name="tls-ec")


def expected_pem(chain: Chain) -> str:
    """What `pem` serves: the PKCS#8 key, the leaf, the intermediate, the root."""
    return chain.key_pem + pem_of(chain.leaf) + pem_of(chain.intermediate) + pem_of(chain.root)


def expected_tls(chain: Chain) -> dict[str, str]:
    ca = pem_of(chain.intermediate) + pem_of(chain.root)
    return {"tls.key": chain.key_pem, "tls.crt": pem_of(chain.leaf) + ca, "ca.crt": ca}


def scrambled_pem(chain: Chain) -> str:
    """A PEM bundle as people write them by hand: a PKCS#1 key after the certificates, the root first."""
    key = chain.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    return pem_of(chain.root) + pem_of(chain.leaf) + pem_of(chain.intermediate) + key


def key_lines(chain: Chain) -> list[str]:
    """Lines of the private key's base64 body (PKCS#8 and PKCS#1), none of which may reach a message or a log."""
    traditional = chain.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    return [line for text in (chain.key_pem, traditional) for line in text.splitlines()[1:-1]]


def loads_into_ssl(tmp_path: Path, pem: str) -> None:
    """The one-file PEM is what `ssl.SSLContext.load_cert_chain` takes (it checks the key matches)."""
    path = tmp_path / "bundle.pem"
    path.write_text(pem)
    ssl.create_default_context(ssl.Purpose.SERVER_AUTH).load_cert_chain(str(path))


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


# -- the conversion on its own ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_pkcs12_and_pem_give_the_same_pem_and_tls_keys(kind: str, rsa_chain: Chain, ec_chain: Chain,
                                                      tmp_path: Path) -> None:
    chain = rsa_chain if kind == "rsa" else ec_chain
    for value, content_type in ((chain.pkcs12_base64(), PKCS12), (chain.pem_bundle(), PEM_FILE),
                                (scrambled_pem(chain), None), (chain.pkcs12_base64(), None)):
        assert certificates.candidate(value, content_type)
        assert certificates.convert("c", value, "pem", content_type) == {"c": expected_pem(chain)}
        assert certificates.convert("c", value, "tls", content_type) == expected_tls(chain)
    loads_into_ssl(tmp_path, expected_pem(chain))


def test_public_parts_from_a_certificate_and_a_jwk(rsa_chain: Chain, ec_chain: Chain) -> None:
    der = rsa_chain.leaf.public_bytes(serialization.Encoding.DER)
    assert certificates.certificate_pem(base64.b64encode(der).decode()) == pem_of(rsa_chain.leaf)
    for chain in (rsa_chain, ec_chain):
        public = chain.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        assert certificates.public_key_pem(chain.jwk()) == public
        assert certificates.public_key_pem({**chain.jwk(), "kty": chain.jwk()["kty"] + "-HSM"}) == public


def test_plain_values_are_not_certificates(rsa_chain: Chain) -> None:
    ca_bundle = pem_of(rsa_chain.intermediate) + pem_of(rsa_chain.root)
    for value in ("hunter2", "c2VjcmV0LXZhbHVlLXRoYXQtaXMtYmFzZTY0", ca_bundle, '{"a": 1}', ""):
        assert not certificates.candidate(value)


def test_what_will_not_convert_says_why(rsa_chain: Chain) -> None:
    truncated = base64.b64encode(base64.b64decode(rsa_chain.pkcs12_base64())[:120]).decode()
    for value, content_type, why in (
        ("not a certificate", None, "neither a PEM certificate"),
        ("bm90IGEgcGtjczEy", PKCS12, "not base64 PKCS#12"),
        (truncated, None, "does not parse"),
        (truncated, PKCS12, "does not parse"),
    ):
        assert certificates.candidate(value, content_type) == (value == truncated or content_type is not None)
        with pytest.raises(CertificateProblem, match=why):
            certificates.convert("c", value, "pem", content_type)


def test_mismatched_missing_and_unsupported_parts_are_refused(rsa_chain: Chain, ec_chain: Chain) -> None:
    other_key = ec_chain.key_pem
    problems = {
        "no private key": pem_of(rsa_chain.leaf),
        "belongs to its private key": other_key + pem_of(rsa_chain.leaf),
        "no certificate": rsa_chain.key_pem,
        "encrypted": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        + pem_of(rsa_chain.leaf),
        "more than one private key": rsa_chain.key_pem + other_key + pem_of(rsa_chain.leaf),
    }
    for why, value in problems.items():
        with pytest.raises(CertificateProblem, match=why) as caught:
            certificates.convert("c", value, "tls")
        for line in key_lines(rsa_chain) + key_lines(ec_chain):
            assert line not in str(caught.value)
    for jwk, why in (({"kty": "oct", "k": "c2VjcmV0"}, "'oct' has no public key"),
                     ({"kty": "OKP", "crv": "Ed25519", "x": "AA"}, "'OKP'"),
                     ({"kty": "EC", "crv": "P-192", "x": "AA", "y": "AA"}, "curve"),
                     ({"kty": "RSA", "n": "!!"}, "'e'")):
        with pytest.raises(CertificateProblem, match=why) as caught:
            certificates.public_key_pem(jwk)
        assert "c2VjcmV0" not in str(caught.value)
    with pytest.raises(CertificateProblem, match="no issued certificate"):
        certificates.certificate_pem("")


# -- Key Vault ----------------------------------------------------------------------------------------


def keyvault(vault: FakeKeyVault, **extra: str) -> dict[str, str]:
    return {"backend": "keyvault", **vault_metadata(vault, **extra)}


def stock(vault: FakeKeyVault, rsa_chain: Chain, ec_chain: Chain) -> None:
    """A vault as apps have them: certificates whose policy chose each content type, a plain secret."""
    vault.set_certificate("tls-p12", rsa_chain.pkcs12_base64(), content_type=PKCS12,
                          cer=rsa_chain.leaf.public_bytes(serialization.Encoding.DER), jwk=rsa_chain.jwk())
    vault.set_certificate("tls-pem", scrambled_pem(ec_chain), content_type=PEM_FILE,
                          cer=ec_chain.leaf.public_bytes(serialization.Encoding.DER), jwk=ec_chain.jwk())
    vault.set_secret("db-password", "plain-VALUE-1")


def test_keyvault_serves_a_certificate_in_each_shape(
    bridge: Bridge, fake_vault: FakeKeyVault, rsa_chain: Chain, ec_chain: Chain
) -> None:
    stock(fake_vault, rsa_chain, ec_chain)
    bridge.init(keyvault(fake_vault))
    # raw by default: what Dapr's built-in store serves, so a migration changes nothing.
    assert bridge.get("tls-p12") == {"tls-p12": rsa_chain.pkcs12_base64()}
    assert bridge.get("tls-p12", {"format": "pem"}) == {"tls-p12": expected_pem(rsa_chain)}
    assert bridge.get("tls-pem", {"format": "PEM"}) == {"tls-pem": expected_pem(ec_chain)}
    assert bridge.get("tls-p12", {"format": "tls"}) == expected_tls(rsa_chain)
    assert bridge.get("tls-pem", {"format": "raw"}) == {"tls-pem": scrambled_pem(ec_chain)}
    assert bridge.get("tls-p12", {"objectType": "certificate"}) == {"tls-p12": pem_of(rsa_chain.leaf)}
    assert bridge.get("tls-pem", {"objectType": "cert"}) == {"tls-pem": pem_of(ec_chain.leaf)}  # the CSI spelling
    public = rsa_chain.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert bridge.get("tls-p12", {"objectType": "key"}) == {"tls-p12": public}
    assert "PUBLIC KEY" in bridge.get("tls-pem", {"objectType": "key"})["tls-pem"]
    # Each view is its own cache entry: asking again reaches the vault no more.
    reads = (fake_vault.count("get"), fake_vault.count("certificates"), fake_vault.count("keys"))
    assert bridge.get("tls-p12", {"format": "pem"}) == {"tls-p12": expected_pem(rsa_chain)}
    assert bridge.get("tls-p12", {"objectType": "certificate"}) == {"tls-p12": pem_of(rsa_chain.leaf)}
    assert bridge.get("tls-p12", {"objectType": "key"}) == {"tls-p12": public}
    assert (fake_vault.count("get"), fake_vault.count("certificates"), fake_vault.count("keys")) == reads


def test_certificate_format_pem_applies_to_certificates_only_and_in_bulk(
    bridge: Bridge, fake_vault: FakeKeyVault, rsa_chain: Chain, ec_chain: Chain
) -> None:
    stock(fake_vault, rsa_chain, ec_chain)
    bridge.init(keyvault(fake_vault, certificateFormat="pem"))
    assert bridge.get("tls-p12") == {"tls-p12": expected_pem(rsa_chain)}
    assert bridge.get("db-password") == {"db-password": "plain-VALUE-1"}
    assert bridge.bulk_get() == {
        "tls-p12": {"tls-p12": expected_pem(rsa_chain)},
        "tls-pem": {"tls-pem": expected_pem(ec_chain)},
        "db-password": {"db-password": "plain-VALUE-1"},
    }
    # A call may ask for another shape, in bulk too; plain secrets stay as they are.
    tls = bridge.bulk_get({"format": "tls"})
    assert tls["tls-pem"] == expected_tls(ec_chain) and tls["db-password"] == {"db-password": "plain-VALUE-1"}
    assert bridge.bulk_get({"format": "raw"})["tls-pem"] == {"tls-pem": scrambled_pem(ec_chain)}
    # multiValued: the Kubernetes TLS shape, advertised as multi-valued.
    bridge.init(keyvault(fake_vault, certificateFormat="pem", multiValued="true"), instance="multi")
    assert bridge.features(instance="multi") == ["MULTIPLE_KEY_VALUES_PER_SECRET"]
    assert bridge.get("tls-p12", instance="multi") == expected_tls(rsa_chain)
    assert bridge.get("tls-p12", {"format": "pem"}, instance="multi") == {"tls-p12": expected_pem(rsa_chain)}


def test_versions_of_certificates_and_keys(bridge: Bridge, fake_vault: FakeKeyVault, rsa_chain: Chain,
                                           ec_chain: Chain) -> None:
    old = fake_vault.set_certificate("rotating", rsa_chain.pkcs12_base64(), content_type=PKCS12,
                                     cer=rsa_chain.leaf.public_bytes(serialization.Encoding.DER),
                                     jwk=rsa_chain.jwk())
    fake_vault.set_certificate("rotating", ec_chain.pem_bundle(), content_type=PEM_FILE,
                               cer=ec_chain.leaf.public_bytes(serialization.Encoding.DER), jwk=ec_chain.jwk())
    bridge.init(keyvault(fake_vault, certificateFormat="pem"))
    assert bridge.get("rotating") == {"rotating": expected_pem(ec_chain)}
    assert bridge.get("rotating", {"version_id": old}) == {"rotating": expected_pem(rsa_chain)}
    assert bridge.get("rotating", {"version_id": old, "objectType": "certificate"}) == {
        "rotating": pem_of(rsa_chain.leaf)
    }
    assert bridge.get("rotating", {"objectType": "certificate"}) == {"rotating": pem_of(ec_chain.leaf)}
    assert "PUBLIC KEY" in bridge.get("rotating", {"version_id": old, "objectType": "key"})["rotating"]
    error = rpc_error(bridge.get, "rotating", {"version_id": "0" * 32, "objectType": "key"})
    assert error.code() == grpc.StatusCode.NOT_FOUND and "key 'rotating'" in error.details()


def test_what_cannot_be_served_is_a_clear_error_and_never_key_material(
    bridge: Bridge, fake_vault: FakeKeyVault, rsa_chain: Chain, ec_chain: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    stock(fake_vault, rsa_chain, ec_chain)
    # A certificate's secret whose key belongs to another certificate; a PKCS#12 that will not parse.
    fake_vault.set_certificate("mismatched", ec_chain.key_pem + pem_of(rsa_chain.leaf), content_type=PEM_FILE,
                               cer=None, jwk=None)
    fake_vault.set_secret("broken-p12", "MIIJqQIBAzCCCW8GCSqGSIb3DQEHAaCCCWAEgglc", content_type=PKCS12)
    fake_vault.set_key("hmac", {"kty": "oct", "k": "c3ltbWV0cmljLVZBTFVF"})
    fake_vault.set_certificate("pending", rsa_chain.pkcs12_base64(), content_type=PKCS12, cer=None, jwk=None)
    details: dict[str, tuple[grpc.StatusCode, str]] = {}
    with caplog.at_level(logging.DEBUG):
        bridge.init(keyvault(fake_vault, bulkSkipErrors="true"))
        for name, metadata in {
            "db-password": {"format": "pem"},
            "mismatched": {"format": "tls"},
            "broken-p12": {"format": "pem"},
            "hmac": {"objectType": "key"},
            "pending": {"objectType": "certificate"},
            "tls-p12": {"format": "jks"},
            "tls-pem": {"objectType": "certificate", "format": "raw"},
        }.items():
            error = rpc_error(bridge.get, name, metadata)
            details[name] = (error.code(), error.details())
        error = rpc_error(bridge.bulk_get, {"objectType": "key"})
        details["bulk"] = (error.code(), error.details())
        # BulkGet with bulkSkipErrors leaves the broken certificates out, and logs them by name.
        bulk = bridge.bulk_get({"format": "pem"})
    assert sorted(bulk) == ["db-password", "pending", "tls-p12", "tls-pem"]
    failed = grpc.StatusCode.FAILED_PRECONDITION
    assert details["db-password"][0] == failed and "'db-password'" in details["db-password"][1]
    assert "neither a PEM certificate" in details["db-password"][1]
    assert details["mismatched"][0] == failed and "belongs to its private key" in details["mismatched"][1]
    assert details["broken-p12"][0] == failed and "'broken-p12'" in details["broken-p12"][1]
    assert details["hmac"][0] == failed and "key 'hmac'" in details["hmac"][1] and "'oct'" in details["hmac"][1]
    assert details["pending"][0] == failed and "no issued certificate" in details["pending"][1]
    for name in ("tls-p12", "tls-pem", "bulk"):
        assert details[name][0] == grpc.StatusCode.INVALID_ARGUMENT, name
    text = json.dumps(details, default=str) + caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    assert "mismatched" in caplog.text and "broken-p12" in caplog.text
    for line in [*key_lines(rsa_chain), *key_lines(ec_chain), "plain-VALUE-1", "c3ltbWV0cmljLVZBTFVF",
                 "MIIJqQIBAzCCCW8GCSqGSIb3DQEHAaCCCWAEgglc"]:
        assert line not in text


def test_a_forbidden_public_part_names_the_role_it_needs(bridge: Bridge, fake_vault: FakeKeyVault,
                                                         rsa_chain: Chain, ec_chain: Chain) -> None:
    stock(fake_vault, rsa_chain, ec_chain)
    bridge.init(keyvault(fake_vault, cacheTTL="0", maxStale="0"))
    fake_vault.forbid()
    error = rpc_error(bridge.get, "tls-p12", {"objectType": "certificate"})
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "certificate 'tls-p12'" in error.details() and "Key Vault Reader" in error.details()
    error = rpc_error(bridge.get, "tls-p12", {"objectType": "key"})
    assert "Key Vault Crypto User" in error.details() and "'get' key permission" in error.details()
    assert "Key Vault Secrets User" in rpc_error(bridge.get, "tls-p12", {"format": "pem"}).details()


# -- the same shapes from the local stores ------------------------------------------------------------


def test_file_and_containerapps_serve_the_same_shapes(
    bridge: Bridge, tmp_path: Path, rsa_chain: Chain, ec_chain: Chain
) -> None:
    values = {"tls-p12": rsa_chain.pkcs12_base64(), "tls-pem": scrambled_pem(ec_chain), "db-password": "plain-2"}
    (tmp_path / "secrets.json").write_text(json.dumps(values))
    volume = tmp_path / "volume"
    volume.mkdir()
    for name, value in values.items():
        (volume / name).write_text(value)
    components = {
        "file": {"backend": "file", "secretsFile": str(tmp_path / "secrets.json"), "certificateFormat": "pem"},
        "aca": {"backend": "containerapps", "secretsPath": str(volume), "certificateFormat": "pem"},
    }
    for instance, metadata in components.items():
        bridge.init(metadata, instance=instance)
        bridge.init({**metadata, "multiValued": "true"}, instance=f"{instance}-multi")
        assert bridge.get("tls-p12", instance=instance) == {"tls-p12": expected_pem(rsa_chain)}
        assert bridge.get("tls-pem", instance=instance) == {"tls-pem": expected_pem(ec_chain)}
        assert bridge.get("db-password", instance=instance) == {"db-password": "plain-2"}
        assert bridge.get("tls-pem", instance=f"{instance}-multi") == expected_tls(ec_chain)
        assert bridge.get("tls-p12", {"format": "tls"}, instance=instance) == expected_tls(rsa_chain)
        assert bridge.get("tls-p12", {"format": "raw"}, instance=instance) == {"tls-p12": values["tls-p12"]}
        bulk = bridge.bulk_get(instance=instance)
        assert bulk == {"tls-p12": {"tls-p12": expected_pem(rsa_chain)},
                        "tls-pem": {"tls-pem": expected_pem(ec_chain)},
                        "db-password": {"db-password": "plain-2"}}
        error = rpc_error(bridge.get, "db-password", {"format": "pem"}, instance=instance)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "'db-password'" in error.details()
        assert "plain-2" not in error.details()
        error = rpc_error(bridge.get, "tls-p12", {"objectType": "certificate"}, instance=instance)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "objectType" in error.details()


def test_env_serves_no_certificate_shapes(bridge: Bridge) -> None:
    bridge.init({"backend": "env"})
    error = rpc_error(bridge.get, "PATH", {"format": "pem"})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'format'" in error.details()


def test_a_container_apps_reference_to_a_certificate_serves_the_same_pem(
    bridge: Bridge, tmp_path: Path, fake_vault: FakeKeyVault, rsa_chain: Chain, ec_chain: Chain
) -> None:
    """A Container Apps secret that is a Key Vault reference to a certificate's secret resolves to its
    PKCS#12; `certificateFormat` turns it into the same PEM and TLS keys as the other stores."""
    stock(fake_vault, rsa_chain, ec_chain)
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "tls-api").write_text(f"@Microsoft.KeyVault(SecretUri={fake_vault.url}/secrets/tls-p12)")
    bridge.init({"backend": "containerapps", "secretsPath": str(volume), "certificateFormat": "pem",
                 "multiValued": "true", "maxRetries": "0"})
    assert bridge.get("tls-api") == expected_tls(rsa_chain)
    assert bridge.get("tls-api", {"format": "pem"}) == {"tls-api": expected_pem(rsa_chain)}
    assert bridge.bulk_get() == {"tls-api": expected_tls(rsa_chain)}
