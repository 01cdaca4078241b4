"""A throwaway certificate authority and a server certificate for the fakes.

The Key Vault SDK refuses plain HTTP (its challenge policy has no opt-out), so
the fake vault speaks TLS with a certificate for 127.0.0.1 and localhost signed
by a CA made per test session. Async Azure clients (aiohttp) trust it through
`SSL_CERT_FILE=<folder>/ca.pem`; sync ones (requests) through
`REQUESTS_CA_BUNDLE` or `connection_verify=`.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

__test__ = False  # "TestCertificates" is not a pytest test class


class TestCertificates:
    """A CA whose `ca.pem` is written to `folder`, and a server identity it signed."""

    __test__ = False

    def __init__(self, folder: Path | str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA()
        self._server = self._ca.issue_cert(*hosts)
        self.ca_path = self.folder / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))

    def server_context(self) -> ssl.SSLContext:
        """An SSLContext for a server presenting the certificate for `hosts`."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """An SSLContext that trusts only this CA (for tests' own HTTPS calls)."""
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context
