"""The Azure clouds and their hosts: one set of host rules for every part of secretbridge.

Which cloud a Component names, where its identities sign in, which DNS suffix its vaults have, and
whether a host is certainly a real Azure Key Vault (where an authentication challenge must be
verified, and where the sidecar's token may go without the operator saying so).
"""

from __future__ import annotations

import re
from enum import StrEnum


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
