"""Key Vault secret URIs and the `@Microsoft.KeyVault(...)` references App Service and Container Apps
put in place of a value."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from secretbridge.azure.hosts import (
    SECRET_NAME,
    VAULT_NAME,
    VAULT_SUFFIXES,
    AzureEnvironment,
    is_azure_vault_host,
    show_host,
    vault_host_problem,
)
from secretbridge.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from secretbridge.core.names import show_name
from secretbridge.core.policy import HostPort


@dataclass(frozen=True)
class SecretRef:
    """A secret in some vault: `vault_url` like `https://myvault.vault.azure.net`."""

    vault_url: str
    name: str
    version: str | None = None


def parse_secret_uri(uri: str) -> SecretRef:
    """`https://<vault>.vault.azure.net/secrets/<name>[/<version>][/]` to a `SecretRef`.

    Any https host is accepted (emulators, sovereign clouds); raises `InvalidArgument` otherwise.
    """
    parts = urlsplit(uri.strip())
    segments = [s for s in parts.path.split("/") if s]
    if (
        parts.scheme.lower() != "https"
        or not parts.hostname
        or parts.query
        or parts.fragment
        or len(segments) not in (2, 3)
        or segments[0].lower() != "secrets"
        or not SECRET_NAME.match(segments[1])
    ):
        raise InvalidArgument(
            f"{show_name(uri)} is not a Key Vault secret URI "
            "(https://<vault>.vault.azure.net/secrets/<name>[/<version>])"
        )
    version = segments[2] if len(segments) == 3 else None
    return SecretRef(vault_url=f"https://{parts.netloc}", name=segments[1], version=version)


_REFERENCE = re.compile(r"^\s*@Microsoft\.KeyVault\((?P<body>.*)\)\s*$", re.IGNORECASE | re.DOTALL)


def parse_reference(text: str, environment: AzureEnvironment = AzureEnvironment.PUBLIC) -> SecretRef | None:
    """An App Service / Container Apps Key Vault reference, or None when `text` is not one.

    Accepts `@Microsoft.KeyVault(SecretUri=<uri>)` and
    `@Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<version>])`
    (the vault's host then comes from `environment`). A malformed reference raises `InvalidArgument`.
    """
    match = _REFERENCE.match(text)
    if match is None:
        return None
    fields: dict[str, str] = {}
    for part in match.group("body").split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise InvalidArgument("a Key Vault reference has a part without '=' (expected Key=Value pairs)")
        fields[key.strip().lower()] = value.strip()
    if "secreturi" in fields:
        return parse_secret_uri(fields["secreturi"])
    vault, name = fields.get("vaultname"), fields.get("secretname")
    if not vault or not name:
        raise InvalidArgument(
            "a Key Vault reference needs SecretUri=..., or VaultName=...;SecretName=...[;SecretVersion=...]"
        )
    if not VAULT_NAME.match(vault) or not SECRET_NAME.match(name):
        raise InvalidArgument(f"a Key Vault reference names an invalid vault or secret ({show_name(vault)}, "
                              f"{show_name(name)})")
    return SecretRef(
        vault_url=f"https://{vault}.{VAULT_SUFFIXES[environment]}",
        name=name,
        version=fields.get("secretversion") or None,
    )


_PREFIX = "@microsoft.keyvault"
_VERSION = re.compile(r"[0-9A-Za-z]{1,64}")


def is_reference(text: str) -> bool:
    """Whether a value is meant as a Key Vault reference (and so must never be served as it is)."""
    return text.lstrip()[: len(_PREFIX)].lower() == _PREFIX


@dataclass(frozen=True)
class ReferenceTarget:
    """Where a vetted reference points: the cache key, the version, and how messages name it."""

    key: str  # https://<host>/secrets/<name>
    version: str | None
    shown: str  # "secret 'db' in Key Vault 'kv'"


def vet_reference(
    name: str, text: str, environment: AzureEnvironment, allowed_hosts: frozenset[HostPort]
) -> ReferenceTarget:
    """Parse the reference held by secret `name` and refuse one that names a host outside Azure.

    A tampered value must not be able to send the identity's token to a server of its choosing, so
    only real Key Vault hosts, and hosts the operator listed (`allowed_hosts`, from
    `--allow-vault-host`), pass. The literal is never echoed: it is the secret's value. Raises
    FailedPrecondition or PermissionDenied.
    """
    bad = f"secret {show_name(name)} holds a malformed Key Vault reference"
    try:
        ref: SecretRef | None = parse_reference(text, environment)
    except InvalidArgument:
        ref = None
    if ref is None:
        raise FailedPrecondition(
            f"{bad}; expected @Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>"
            "[/<version>]) or @Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<v>])"
        )
    parts = urlsplit(ref.vault_url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.username is not None or parts.password is not None or port == -1:
        raise FailedPrecondition(f"{bad}: its vault address is not a plain host[:port]")
    netloc = show_host(host, port)
    on_azure = is_azure_vault_host(host) and port in (None, 443)
    problem = vault_host_problem(host, port, allowed_hosts)
    if problem is not None:
        raise PermissionDenied(f"secret {show_name(name)} is a Key Vault reference to host {problem}")
    if ref.version is not None and not _VERSION.fullmatch(ref.version):
        raise FailedPrecondition(f"{bad}: its version is not a Key Vault version id")
    vault = host.split(".")[0] if on_azure else netloc
    return ReferenceTarget(
        key=f"https://{netloc}/secrets/{ref.name}",
        version=ref.version,
        shown=f"secret {show_name(ref.name)} in Key Vault {vault!r}",
    )
