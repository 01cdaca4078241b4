"""pytest fixtures for the Azure fakes; load them with `pytest_plugins`.

    pytest_plugins = ("tests.fakes.fixtures",)   # at the top of the test module

Each test gets a fresh identity endpoint and vault (new ports), an environment cleared of every
variable that steers azure-identity, and `SSL_CERT_FILE` pointing at the test CA.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from azure.keyvault.secrets._shared import http_challenge_cache

from .identity import IDENTITY_ENV_VARS, FakeManagedIdentity
from .keyvault import FakeKeyVault
from .tls import TestCertificates


@pytest.fixture(scope="session")
def kv_certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """The test CA (`ca_path`) and the fakes' server certificate."""
    return TestCertificates(tmp_path_factory.mktemp("kv-tls"))


def _closed_loopback_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch, kv_certs: TestCertificates) -> pytest.MonkeyPatch:
    """No Azure identity variables from the outer environment; the test CA trusted; names under
    `.invalid` answered as not existing without asking the resolver; `secretbridge doctor`'s IMDS
    probe pointed at a closed loopback port (never at 169.254.169.254)."""
    for name in IDENTITY_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(kv_certs.ca_path))
    monkeypatch.setenv("SECRETBRIDGE_IMDS_ADDRESS", _closed_loopback_port())
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        # glibc sends `.invalid` queries to the configured nameserver like any other; a resolver
        # answers NXDOMAIN (RFC 6761), which is what this says, with no packet leaving the machine.
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.lower().rstrip(".").endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return monkeypatch


@pytest.fixture
def fake_identity(azure_env: pytest.MonkeyPatch) -> Iterator[FakeManagedIdentity]:
    """A managed-identity endpoint, App Service style, advertised in the environment."""
    with FakeManagedIdentity() as identity:
        for name, value in identity.env().items():
            azure_env.setenv(name, value)
        yield identity


@pytest.fixture
def fake_vault(kv_certs: TestCertificates, fake_identity: FakeManagedIdentity) -> Iterator[FakeKeyVault]:
    """A vault that accepts only `fake_identity`'s tokens."""
    # The SDK caches challenges per host:port for the whole process; a port handed out again
    # must not inherit an earlier test's challenge.
    http_challenge_cache.clear()
    with FakeKeyVault(kv_certs, identity=fake_identity) as vault:
        yield vault

