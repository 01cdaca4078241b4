"""Real certificates for the certificate tests: a root, an intermediate and a leaf with its key.

Made with `cryptography`, the way a certificate authority (or Key Vault's own issuer) makes them:
the leaf is signed by the intermediate, the intermediate by the root, so a TLS peer that trusts
only the root accepts the leaf only when the intermediate comes with it. `pkcs12_base64` and
`pem_bundle` are the two values Key Vault stores in a certificate's secret.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key(kind: str) -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(kind)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(subject: str, key: Any, issuer: x509.Certificate | None, issuer_key: Any, *, ca: bool,
           hosts: tuple[str, ...] = ()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        ).add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts] or [x509.DNSName("localhost")]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def pem_of(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass
class Chain:
    """A leaf certificate with its private key, issued through an intermediate under a root."""

    key: Any
    leaf: x509.Certificate
    intermediate: x509.Certificate
    root: x509.Certificate
    root_key: Any
    _pkcs12: str = ""

    @property
    def key_pem(self) -> str:
        """The private key as PKCS#8 PEM (what secretbridge serves)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")

    @property
    def chain(self) -> list[x509.Certificate]:
        """What follows the leaf, as Key Vault keeps it: the intermediate, then the root."""
        return [self.intermediate, self.root]

    def pkcs12_base64(self) -> str:
        """The certificate's secret as Key Vault stores it with `application/x-pkcs12`: no password
        (made once: the same value on every call)."""
        if not self._pkcs12:
            blob = pkcs12.serialize_key_and_certificates(
                b"tls", self.key, self.leaf, self.chain, serialization.NoEncryption()
            )
            self._pkcs12 = base64.b64encode(blob).decode("ascii")
        return self._pkcs12

    def pem_bundle(self, *, key_format: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> str:
        """The certificate's secret as Key Vault stores it with `application/x-pem-file`: the key,
        then the certificates (the chain in the order given)."""
        key = self.key.private_bytes(serialization.Encoding.PEM, key_format, serialization.NoEncryption())
        return key.decode("ascii") + pem_of(self.leaf) + "".join(pem_of(c) for c in self.chain)

    def jwk(self) -> dict[str, Any]:
        """The public JWK Key Vault's keys endpoint gives for this key."""
        return jwk_of(self.key.public_key())


def _b64url(number: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (number.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(number.to_bytes(size, "big")).rstrip(b"=").decode("ascii")


def jwk_of(public: Any) -> dict[str, Any]:
    """A public key as Key Vault's JWK (`kty` RSA or EC)."""
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        return {"kty": "RSA", "n": _b64url(numbers.n), "e": _b64url(numbers.e), "key_ops": ["sign", "verify"]}
    numbers_ec = public.public_numbers()
    size = (public.curve.key_size + 7) // 8
    curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[public.curve.name]
    return {"kty": "EC", "crv": curve, "x": _b64url(numbers_ec.x, size), "y": _b64url(numbers_ec.y, size),
            "key_ops": ["sign", "verify"]}


def make_chain(kind: str = "rsa", *, hosts: tuple[str, ...] = ("localhost",), name: str = "tls-api") -> Chain:
    """A root CA, an intermediate CA and a leaf for `hosts` (client and server use), keys of `kind`
    (`rsa` or `ec`) for the leaf; the CAs use EC P-256 (quick to make)."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _issue(f"{name} test root", root_key, None, root_key, ca=True)
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate = _issue(f"{name} test intermediate", intermediate_key, root, root_key, ca=True)
    key = _key(kind)
    leaf = _issue(name, key, intermediate, intermediate_key, ca=False, hosts=hosts)
    return Chain(key=key, leaf=leaf, intermediate=intermediate, root=root, root_key=root_key)


__all__ = ["Chain", "jwk_of", "make_chain", "pem_of"]
