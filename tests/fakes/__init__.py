"""Test doubles for the services secretbridge talks to, run in-process on 127.0.0.1.

- `FakeKeyVault`: the Key Vault secrets data plane over HTTPS, with the bearer
  challenge, paging, disabled secrets, throttling and outages.
- `FakeManagedIdentity`: the managed-identity token endpoints (App Service /
  Container Apps style and IMDS style), recording which identity asked.
- `TestCertificates`: a throwaway CA and a server certificate for 127.0.0.1.

Each server runs its own asyncio loop on a background thread, listens on an
ephemeral port, and is driven from tests through plain methods. The real,
unmodified Azure SDK talks to them; nothing here patches it.
"""

from .identity import IDENTITY_ENV_VARS, FakeManagedIdentity, TokenRequest
from .keyvault import FakeKeyVault, vault_metadata
from .tls import TestCertificates

__all__ = [
    "IDENTITY_ENV_VARS",
    "FakeKeyVault",
    "FakeManagedIdentity",
    "TestCertificates",
    "TokenRequest",
    "vault_metadata",
]
