"""The Azure clouds and their hosts: one set of host rules for every part of secretbridge.

Which cloud a Component names, where its identities sign in, which DNS suffix its vaults have, and
whether a host is certainly a real Azure Key Vault (where an authentication challenge must be
verified, and where the sidecar's token may go without the operator saying so).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from urllib.parse import urlsplit

from secretbridge.core.policy import ALLOW_VAULT_HOST_FLAG, ALLOW_VAULT_HOSTS_ENV, HostPort


class AzureEnvironment(StrEnum):
    """The Azure clouds, by the names Dapr's metadata uses."""

    PUBLIC = "AzurePublicCloud"
    CHINA = "AzureChinaCloud"
    US_GOVERNMENT = "AzureUSGovernmentCloud"


#: The Microsoft Entra ID host of each cloud (service principals and workload identity sign in there).
AUTHORITY_HOSTS: dict[AzureEnvironment, str] = {
    AzureEnvironment.PUBLIC: "login.microsoftonline.com",
    AzureEnvironment.CHINA: "login.chinacloudapi.cn",
    AzureEnvironment.US_GOVERNMENT: "login.microsoftonline.us",
}

_ENVIRONMENT_SPELLINGS: dict[str, AzureEnvironment] = {
    "azurepubliccloud": AzureEnvironment.PUBLIC,
    "azurepublic": AzureEnvironment.PUBLIC,
    "azurechinacloud": AzureEnvironment.CHINA,
    "azurechina": AzureEnvironment.CHINA,
    "azureusgovernmentcloud": AzureEnvironment.US_GOVERNMENT,
    "azureusgovernment": AzureEnvironment.US_GOVERNMENT,
}


def parse_environment(text: str) -> AzureEnvironment:
    """`AzurePublicCloud`, `AzurePublic`, ... (any case) to an `AzureEnvironment`."""
    try:
        return _ENVIRONMENT_SPELLINGS[text.strip().lower()]
    except KeyError:
        raise ValueError(text) from None


def check_environment(value: str) -> str | None:
    """Why `value` is not a cloud name, or None when it is one (for the metadata declaration)."""
    if value.strip().lower() in _ENVIRONMENT_SPELLINGS:
        return None
    return f"must be one of {', '.join(e.value for e in AzureEnvironment)} (or AzurePublic, AzureChina, " \
           f"AzureUSGovernment); got {value!r}"



#: The DNS suffix of Key Vault in each cloud.
VAULT_SUFFIXES: dict[AzureEnvironment, str] = {
    AzureEnvironment.PUBLIC: "vault.azure.net",
    AzureEnvironment.CHINA: "vault.azure.cn",
    AzureEnvironment.US_GOVERNMENT: "vault.usgovcloudapi.net",
}
# Hosts that are certainly real Key Vaults (or Managed HSMs), where the challenge's resource must
# be verified: turning verification off there would let a spoofed challenge redirect the token.
_AZURE_VAULT_DOMAINS = (
    *VAULT_SUFFIXES.values(),
    "vault.microsoftazure.de",
    "managedhsm.azure.net",
    "managedhsm.azure.cn",
    "managedhsm.usgovcloudapi.net",
)

#: Key Vault's rule for secret names.
SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
VAULT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$")


def is_azure_vault_host(host: str) -> bool:
    """Whether a host is a real Azure Key Vault (or Managed HSM) host, in any cloud."""
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in _AZURE_VAULT_DOMAINS)


# ---------------------------------------------------------------------------------------------
# The operator's list of vault hosts outside Azure: the one rule for `vaultUri`, Key Vault
# references and relaxed challenge verification.


def _canonical(host: str) -> str:
    return host.strip().lower().rstrip(".")


def show_host(host: str, port: int | None) -> str:
    """`host[:port]` as an operator would write it (IPv6 in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def parse_vault_host(entry: str) -> HostPort:
    """`host`, `host:port` or `[v6]:port` to (host, port); a bare host allows every port.

    Raises `ValueError` with a message saying what is wrong with the entry.
    """
    text = entry.strip()
    if not text or any(c in text for c in "/@?#") or any(c.isspace() for c in text):
        raise ValueError(f"{entry!r} is not host or host:port (no scheme, path, user or spaces)")
    parts = urlsplit(f"//{text}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{entry!r} has a port that is not a number from 0 to 65535") from None
    host = _canonical(parts.hostname or "")
    if not host:
        raise ValueError(f"{entry!r} names no host")
    return host, port


def parse_vault_hosts(entries: Iterable[str]) -> frozenset[HostPort]:
    """Every entry of `--allow-vault-host` flags or comma-separated `SECRETBRIDGE_ALLOW_VAULT_HOSTS`."""
    found: set[HostPort] = set()
    for entry in entries:
        for part in entry.split(","):
            if part.strip():
                found.add(parse_vault_host(part))
    return frozenset(found)


def operator_vault_hosts(
    flags: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> frozenset[HostPort]:
    """The hosts the operator allowed: `--allow-vault-host` entries plus `SECRETBRIDGE_ALLOW_VAULT_HOSTS`.

    `serve`, `check` and `doctor` all read it this way. Raises `ValueError` naming the bad entry."""
    env = os.environ if environ is None else environ
    try:
        from_env = parse_vault_hosts([env.get(ALLOW_VAULT_HOSTS_ENV, "")])
    except ValueError as err:
        raise ValueError(f"{ALLOW_VAULT_HOSTS_ENV}: {err}") from None
    return parse_vault_hosts(flags) | from_env


def operator_listed(allowed: frozenset[HostPort], host: str, port: int | None) -> bool:
    """Whether the operator listed this host (with this port, or with none)."""
    host = _canonical(host)
    return (host, None) in allowed or (port is not None and (host, port) in allowed) or (
        port is None and (host, 443) in allowed
    )


def _how_to_allow(host: str, port: int | None) -> str:
    return (
        f"only the operator can allow it: start serve with {ALLOW_VAULT_HOST_FLAG} {show_host(host, port)} "
        f"(or list it in {ALLOW_VAULT_HOSTS_ENV})"
    )


def vault_host_problem(
    host: str, port: int | None, allowed: frozenset[HostPort], *, relaxed: bool = False
) -> str | None:
    """Why the sidecar's token must not go to this vault host, or None when it may.

    Real Azure Key Vault hosts (on 443) may always be used, with the challenge verified; any other
    host, and relaxed challenge verification (`relaxed`), only when the operator listed the host.
    The text starts with the host, to follow "names " or "to host ".
    Relaxed verification is never allowed for a real Azure host: a spoofed challenge there would
    redirect the token.
    """
    host = _canonical(host)
    shown = show_host(host, port)
    azure = is_azure_vault_host(host) and port in (None, 443)
    if relaxed and is_azure_vault_host(host):
        return (
            f"{shown} is a real Azure Key Vault host, where the challenge must be verified "
            "(relaxed verification exists for emulators and test doubles)"
        )
    if azure:
        return None
    if operator_listed(allowed, host, port):
        return None
    if relaxed:
        return f"relaxed challenge verification for {shown} sends the identity's token unchecked; " \
               + _how_to_allow(host, port)
    return (
        f"{shown}, which is not a Key Vault host (*.{', *.'.join(VAULT_SUFFIXES.values())} on port 443), and "
        f"the identity's token would be sent there; {_how_to_allow(host, port)}"
    )
