"""Certificates and keys in the shapes apps load: pure conversion, no I/O.

A Key Vault certificate's secret holds the certificate with its private key as base64 PKCS#12
(`application/x-pkcs12`) or as PEM (`application/x-pem-file`), whichever the certificate's policy
chose; a local file or a Container Apps secret may hold either too. Apps want one shape whatever
the store, so every backend that serves certificates converts here:

- `pem`: one PEM text: the private key (PKCS#8), then the leaf certificate, then its chain (leaf
  first, each certificate followed by the one that issued it, as TLS libraries expect a chain file);
- `tls`: the Kubernetes TLS secret's keys: `tls.key` (PKCS#8), `tls.crt` (leaf and chain) and
  `ca.crt` (the chain only, when there is one);
- `raw`: the stored value, untouched.

The public parts come from Key Vault's other endpoints: `certificate_pem` turns a certificate's
`cer` (DER) into PEM, `public_key_pem` a key's JWK (RSA or EC) into a SubjectPublicKeyInfo PEM.

Every refusal is a `CertificateProblem` whose text says what was wrong (never a byte of the
value); the backend names the secret. `cryptography` is imported on first use, so `check` and
the stores that never convert do not pay for loading it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

#: Request metadata and instance values: how a certificate-backed secret is served.
RAW, PEM, TLS = "raw", "pem", "tls"
FORMATS: tuple[str, ...] = (RAW, PEM, TLS)
#: What a Get may ask for with request metadata `objectType`.
SECRET, CERTIFICATE, KEY = "secret", "certificate", "key"
OBJECT_TYPES: tuple[str, ...] = (SECRET, CERTIFICATE, KEY)
#: Other spellings of an object type users know: the Secrets Store CSI driver's `objectType: cert`.
OBJECT_TYPE_ALIASES = {"cert": CERTIFICATE}
#: The content types Key Vault gives a certificate's secret.
PKCS12_TYPE = "application/x-pkcs12"
PEM_TYPE = "application/x-pem-file"
CERTIFICATE_TYPES = (PKCS12_TYPE, PEM_TYPE)
#: The keys of the Kubernetes TLS shape.
TLS_KEY, TLS_CRT, CA_CRT = "tls.key", "tls.crt", "ca.crt"

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
#: PKCS#12 is DER: SEQUENCE { version INTEGER 3, ... }: a SEQUENCE tag, a length, then 02 01 03.
_PFX_VERSION = b"\x02\x01\x03"
#: Conversions remembered (a file store converts the same value on every Get otherwise).
_REMEMBERED = 256


class CertificateProblem(ValueError):
    """A value cannot be served in the shape asked for; the text says why, never what it holds."""


@dataclass(frozen=True)
class Bundle:
    """A certificate with its private key, each part as PEM text."""

    key: str
    leaf: str
    chain: tuple[str, ...]

    def pem(self) -> str:
        """The private key, the leaf, then the chain: one file `ssl.load_cert_chain` reads."""
        return self.key + self.leaf + "".join(self.chain)

    def tls(self) -> dict[str, str]:
        """The Kubernetes TLS secret's keys (`ca.crt` only when there is a chain)."""
        shaped = {TLS_KEY: self.key, TLS_CRT: self.leaf + "".join(self.chain)}
        if self.chain:
            shaped[CA_CRT] = "".join(self.chain)
        return shaped


def _pfx_bytes(value: str) -> bytes | None:
    """The DER of a base64 PKCS#12 value, or None when the value does not look like one."""
    text = value.strip()
    if len(text) < 16 or not _BASE64.fullmatch(text):
        return None
    try:
        der = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) < 8 or der[0] != 0x30:
        return None
    # Skip the SEQUENCE's length (short form, or long form of 1-4 bytes) to reach the version.
    offset = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
    return der if der[offset:offset + 3] == _PFX_VERSION else None


def _pem_blocks(value: str) -> list[tuple[str, str]]:
    return [(match.group(1), match.group(0)) for match in _PEM_BLOCK.finditer(value)]


@lru_cache(maxsize=_REMEMBERED)
def candidate(value: str, content_type: str | None = None) -> bool:
    """Whether `value` presents itself as a certificate with its private key: Key Vault's content
    type for a certificate's secret, a PEM text with both a CERTIFICATE and a PRIVATE KEY block, or
    base64 PKCS#12. A candidate that then fails to convert is an error; anything else (a CA bundle
    of certificates only, a password) is a plain secret."""
    if content_type is not None and content_type.strip().lower() in CERTIFICATE_TYPES:
        return True
    if "-----BEGIN" in value:
        return "-----BEGIN CERTIFICATE-----" in value and "PRIVATE KEY-----" in value
    return _pfx_bytes(value) is not None


def parse(value: str, content_type: str | None = None) -> Bundle:
    """The certificate, its key and its chain in `value` (PKCS#12 base64, or PEM).

    `content_type` (Key Vault's) decides the encoding when given; otherwise the value does.
    Raises `CertificateProblem`.
    """
    kind = (content_type or "").strip().lower()
    if kind == PKCS12_TYPE or (kind != PEM_TYPE and "-----BEGIN" not in value):
        der = _pfx_bytes(value)
        if der is None:
            if kind == PKCS12_TYPE:
                raise CertificateProblem("its content type says PKCS#12, but the value is not base64 PKCS#12")
            raise CertificateProblem(
                "it is neither a PEM certificate with its private key nor a base64 PKCS#12 (.pfx) bundle"
            )
        return _from_pkcs12(der)
    return _from_pem(value)


def _pkcs8(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    text: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return text.decode("ascii")


def _cert_pem(certificate: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return str(certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"))


def _supported_key(key: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                      | ed448.Ed448PrivateKey):
        raise CertificateProblem(f"its private key is of an unsupported type ({type(key).__name__.lstrip('_')})")


def _matches(key: Any, certificate: Any) -> bool:
    from cryptography.hazmat.primitives import serialization

    def spki(public: Any) -> bytes:
        return bytes(public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ))

    return spki(key.public_key()) == spki(certificate.public_key())


def _ordered(leaf: Any, others: list[Any]) -> list[Any]:
    """The chain from `leaf` upwards (each certificate then its issuer); certificates that issue
    none of those follow in the order given, so nothing the store held is dropped."""
    chain: list[Any] = []
    remaining = list(others)
    current = leaf
    while remaining:
        issuer = next((c for c in remaining if c.subject == current.issuer and c is not current), None)
        if issuer is None:
            break
        chain.append(issuer)
        remaining.remove(issuer)
        if issuer.subject == issuer.issuer:
            break  # a self-signed root ends the chain
        current = issuer
    return chain + remaining


def _bundle(key: Any, certificates: list[Any]) -> Bundle:
    if key is None:
        raise CertificateProblem("it holds no private key")
    if not certificates:
        raise CertificateProblem("it holds no certificate (the chain is empty)")
    _supported_key(key)
    leaf = next((c for c in certificates if _matches(key, c)), None)
    if leaf is None:
        raise CertificateProblem("none of its certificates belongs to its private key")
    others = [c for c in certificates if c is not leaf]
    return Bundle(key=_pkcs8(key), leaf=_cert_pem(leaf), chain=tuple(_cert_pem(c) for c in _ordered(leaf, others)))


def _from_pkcs12(der: bytes) -> Bundle:
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        loaded = pkcs12.load_pkcs12(der, None)
    except ValueError:
        # The library's text may quote parts of the structure: say what it is, not what it said.
        raise CertificateProblem(
            "its PKCS#12 bundle does not parse (corrupt, or protected by a password; Key Vault's have none)"
        ) from None
    except TypeError:
        raise CertificateProblem("its PKCS#12 bundle is protected by a password; store it without one") from None
    certificates = ([loaded.cert.certificate] if loaded.cert is not None else []) + [
        c.certificate for c in loaded.additional_certs
    ]
    return _bundle(loaded.key, certificates)


def _from_pem(value: str) -> Bundle:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    key: Any = None
    certificates: list[Any] = []
    for kind, block in _pem_blocks(value):
        if kind == "CERTIFICATE":
            try:
                certificates.append(x509.load_pem_x509_certificate(block.encode("ascii")))
            except ValueError:
                raise CertificateProblem(f"its certificate number {len(certificates) + 1} does not parse") from None
        elif kind.endswith("PRIVATE KEY"):
            if key is not None:
                raise CertificateProblem("it holds more than one private key")
            if kind == "ENCRYPTED PRIVATE KEY":
                raise CertificateProblem("its private key is encrypted; store it without a password")
            try:
                # Only transcoded, never used to sign here: the RSA consistency check (0.1 s of CPU for a
                # 2048-bit key) is left to the TLS library that uses it.
                key = serialization.load_pem_private_key(
                    block.encode("ascii"), password=None, unsafe_skip_rsa_key_validation=True
                )
            except (ValueError, TypeError):
                raise CertificateProblem(f"its private key ({kind}) does not parse") from None
            except UnsupportedAlgorithm:
                raise CertificateProblem(f"its private key ({kind}) is of an unsupported type") from None
    if key is None and not certificates:
        raise CertificateProblem("it holds no PEM certificate or private key")
    return _bundle(key, certificates)


@lru_cache(maxsize=_REMEMBERED)
def _parsed(value: str, content_type: str | None) -> Bundle | str:
    try:
        return parse(value, content_type)
    except CertificateProblem as problem:
        return str(problem)  # remembered too: a broken value is not parsed again on every read


def convert(name: str, value: str, shape: str, content_type: str | None = None) -> dict[str, str]:
    """`value` in `shape` (`pem`: `{name: text}`, `tls`: the three keys); raises `CertificateProblem`.

    Parsing is CPU work (a PKCS#12 with a 2048-bit RSA key takes about 0.15 s, its key check
    included), so parsed bundles are remembered (the last few hundred values): a store answering
    from memory does not parse the same bundle on every read. Async callers run a conversion that
    may not be remembered on a worker thread.
    """
    parsed = _parsed(value, content_type)
    if isinstance(parsed, str):
        raise CertificateProblem(parsed)
    return {name: parsed.pem()} if shape == PEM else parsed.tls()


def certificate_pem(cer: str) -> str:
    """A Key Vault certificate's `cer` (base64 DER of the leaf) as PEM; raises `CertificateProblem`."""
    from cryptography import x509

    if not cer:
        raise CertificateProblem("the vault holds no issued certificate for it yet (its `cer` is empty)")
    try:
        certificate = x509.load_der_x509_certificate(base64.b64decode(cer, validate=False))
    except (binascii.Error, ValueError):
        raise CertificateProblem("the vault's certificate (`cer`) does not parse as DER") from None
    return _cert_pem(certificate)


#: JWK curve names (RFC 7518, and Key Vault's P-256K) as `cryptography` curves.
_CURVES = {"P-256": "SECP256R1", "P-384": "SECP384R1", "P-521": "SECP521R1", "P-256K": "SECP256K1"}


def _number(jwk: Mapping[str, Any], member: str) -> int:
    text = jwk.get(member)
    if not isinstance(text, str) or not text:
        raise CertificateProblem(f"its JWK has no '{member}'")
    try:
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")
    except (binascii.Error, ValueError):
        raise CertificateProblem(f"its JWK member '{member}' is not base64url") from None


def public_key_pem(jwk: Mapping[str, Any]) -> str:
    """The public part of a Key Vault key's JWK (RSA or EC, HSM-backed or not) as a PEM
    SubjectPublicKeyInfo; raises `CertificateProblem` for other key types or a broken JWK."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    kty = str(jwk.get("kty") or "")
    family = kty.removesuffix("-HSM")
    public: Any
    try:
        if family == "RSA":
            public = rsa.RSAPublicNumbers(_number(jwk, "e"), _number(jwk, "n")).public_key()
        elif family == "EC":
            curve_name = _CURVES.get(str(jwk.get("crv") or ""))
            if curve_name is None:
                raise CertificateProblem(f"its curve {str(jwk.get('crv'))[:16]!r} is not supported")
            curve = getattr(ec, curve_name)()
            public = ec.EllipticCurvePublicNumbers(_number(jwk, "x"), _number(jwk, "y"), curve).public_key()
        else:
            shown = kty[:16] or "none"
            raise CertificateProblem(
                f"its key type {shown!r} has no public key to serve (RSA and EC keys do)"
            )
    except ValueError as err:
        if isinstance(err, CertificateProblem):
            raise
        raise CertificateProblem(f"its {family} JWK does not describe a valid public key") from None
    text: bytes = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return text.decode("ascii")


__all__ = [
    "CERTIFICATE",
    "CERTIFICATE_TYPES",
    "FORMATS",
    "KEY",
    "OBJECT_TYPES",
    "PEM",
    "PEM_TYPE",
    "PKCS12_TYPE",
    "RAW",
    "SECRET",
    "TLS",
    "Bundle",
    "CertificateProblem",
    "candidate",
    "certificate_pem",
    "convert",
    "parse",
    "public_key_pem",
]
