"""pytest fixtures for the Azure fakes; load them with `pytest_plugins`.

    pytest_plugins = ("tests.fakes.fixtures",)   # at the top of the test module

Each test gets a fresh identity endpoint and vault (new ports), an environment cleared of every
variable that steers azure-identity, and `SSL_CERT_FILE` pointing at the test CA.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.keyvault.secrets._shared import http_challenge_cache

from .identity import IDENTITY_ENV_VARS, FakeManagedIdentity
from .keyvault import FakeKeyVault
from .tls import TestCertificates


@pytest.fixture(scope="session")
def kv_certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """The test CA (`ca_path`) and the fakes' server certificate."""
    return TestCertificates(tmp_path_factory.mktemp("kv-tls"))


@pytest.fixture
def azure_env(monkeypatch: pytest.MonkeyPatch, kv_certs: TestCertificates) -> pytest.MonkeyPatch:
    """No Azure identity variables from the outer environment; the test CA trusted."""
    for name in IDENTITY_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(kv_certs.ca_path))
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

