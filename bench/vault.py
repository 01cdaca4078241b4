"""The Key Vault test double, its managed identity and its CA, set up for benchmark processes.

The fakes run in the benchmark's own process (on background threads); the
secretbridge servers run as child processes and reach them over HTTPS on
127.0.0.1 with the real azure SDK, trusting the throwaway CA through
`SSL_CERT_FILE` and finding the identity endpoint through `IDENTITY_ENDPOINT`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

from bench.workload import secret_value
from tests.fakes import IDENTITY_ENV_VARS, FakeKeyVault, FakeManagedIdentity, TestCertificates

#: Where the repository root is, so child processes can import `bench` and `tests`.
REPO_ROOT = Path(__file__).resolve().parent.parent


class VaultRig:
    """A running fake vault + identity, and the environment and metadata to reach them."""

    def __init__(self) -> None:
        # Short: Unix socket paths made under it must fit in 107 bytes.
        self.folder = Path(tempfile.mkdtemp(prefix="sbb-", dir="/tmp"))
        self.certs = TestCertificates(self.folder / "tls")
        self.identity = FakeManagedIdentity()
        self.vault: FakeKeyVault | None = None
        self.prioritised = False  # the fake vault's thread runs at a raised priority

    def __enter__(self) -> Self:
        self.identity.start()
        self.vault = FakeKeyVault(self.certs, identity=self.identity).start()
        # Key Vault is remote: on a busy machine its answers should still take their injected
        # latency, so that the noise slows the servers measured, not the stand-in (root only).
        self.prioritised = self.vault.raise_priority()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.vault is not None:
            self.vault.stop()
        self.identity.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def fake(self) -> FakeKeyVault:
        """The running fake vault."""
        if self.vault is None:
            raise RuntimeError("VaultRig is not started")
        return self.vault

    def child_env(self) -> dict[str, str]:
        """The environment for a server process: only the fake identity, the test CA trusted."""
        env = {k: v for k, v in os.environ.items() if k not in IDENTITY_ENV_VARS}
        env.update(self.identity.env())
        env["SSL_CERT_FILE"] = str(self.certs.ca_path)
        env["SECRETBRIDGE_ALLOW_VAULT_HOSTS"] = "127.0.0.1"  # the fake vault, allowed by the operator
        # Children import `bench` (servers, load) and `tests.fakes`; make the root importable.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        # Proxies would send 127.0.0.1 traffic elsewhere.
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    def metadata(self, **extra: str) -> dict[str, str]:
        """Init metadata for a keyvault instance on the fake (extra properties override)."""
        return {
            "backend": "keyvault",
            "vaultUri": self.fake.url,
            "disableChallengeResourceVerification": "true",
            "cacheTTL": "5m",
            **extra,
        }

    def preload(self, names: Iterable[str]) -> int:
        """Store each name with its deterministic value; returns how many were stored."""
        count = 0
        for name in names:
            self.fake.set_secret(name, secret_value(name))
            count += 1
        return count

    def clear(self) -> None:
        """Remove every secret (between scenarios), and the injected latency."""
        for name in self.fake.names():
            self.fake.delete(name)
        self.fake.set_latency(0.0)
        self.fake.reset_counters()
