"""Reading Key Vault secrets by URI, for `@Microsoft.KeyVault(...)` references.

A reference may name any vault, so this keeps one `VaultReader` per vault, all sharing one
credential (the instance's identity) and one HTTP session. A key is the secret's URI without
version (`https://<host>/secrets/<name>`); the version, when a reference pins one, is passed
beside it. The runtime puts a cache in front of it and hands the result to the backends that
serve references.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from secretbridge.azure.hosts import is_azure_vault_host
from secretbridge.core.errors import FailedPrecondition
from secretbridge.core.metadata import ParsedMetadata

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from secretbridge.azure.vault import HttpSession, VaultReader

#: What a reference resolution is counted as in metrics and named as in messages.
BACKEND = "keyvault"


class ReferenceReader:
    """Key Vault secrets by URI with one identity, opened on the first reference, not at Init.

    Most volumes hold no references, and building the TLS context (loading the CA bundle) and the
    credential costs more than serving the whole volume does.
    """

    backend = BACKEND

    def __init__(self, metadata: ParsedMetadata, *, timeout: float, max_retries: int) -> None:
        self.metadata = metadata
        self.timeout = timeout
        self.max_retries = max_retries
        self._http: HttpSession | None = None
        self._credential: AsyncTokenCredential | None = None
        self._readers: dict[str, VaultReader] = {}
        self._identity = ""
        self._opening = asyncio.Lock()
        self._closed = False

    async def _open(self) -> None:
        async with self._opening:
            if self._closed:
                raise FailedPrecondition("Key Vault reference resolution is closed (the instance was replaced)")
            if self._credential is not None:
                return
            from secretbridge.azure.identity import build_credential, describe_identity
            from secretbridge.azure.vault import HttpSession

            self._identity = describe_identity(self.metadata)
            http = await HttpSession.create(connection_timeout=self.timeout, read_timeout=self.timeout)
            try:
                credential = build_credential(
                    self.metadata,
                    transport=http.transport(),
                    retry_total=self.max_retries,
                    retry_status=self.max_retries,
                )
            except BaseException:
                await http.close()
                raise
            self._http, self._credential = http, credential

    async def reader(self, vault_url: str) -> VaultReader:
        """The reader for one vault, made on first use with the shared credential."""
        reader = self._readers.get(vault_url)
        if reader is not None:
            return reader
        from secretbridge.azure.vault import VaultReader

        await self._open()
        assert self._http is not None and self._credential is not None
        reader = self._readers.get(vault_url)
        if reader is None:
            host = (urlsplit(vault_url).hostname or "").lower()
            reader = VaultReader(
                vault_url,
                self._credential,
                identity=self._identity,
                # Hosts outside Azure are emulators the operator listed by name; their challenge
                # names vault.azure.net, which verification would (rightly) refuse.
                verify_challenge_resource=is_azure_vault_host(host),
                max_retries=self.max_retries,
                transport=self._http.transport(),
                metadata=self.metadata,
            )
            self._readers[vault_url] = reader
        return reader

    async def get(self, key: str, version: str | None = None) -> dict[str, str]:
        """`{key: value}` for the secret at URI `key` (latest, or `version`)."""
        vault_url, _, secret = key.rpartition("/secrets/")
        reader = await self.reader(vault_url)
        found = await reader.get(secret, version)
        return {key: found.value}

    def failing(self) -> str | None:
        """Why a vault references name, or the identity, is failing now, or None (see `VaultReader.failing`)."""
        return next((cause for reader in list(self._readers.values()) if (cause := reader.failing())), None)

    def watch_failure(self, future: asyncio.Future[str]) -> None:
        """Resolve `future` at the next failed attempt against any vault references name."""
        for reader in list(self._readers.values()):
            reader.watch_failure(future)

    async def check(self) -> None:
        """Nothing to reach until a reference names a vault; the references themselves prove it."""

    async def close(self) -> None:
        self._closed = True
        readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            await reader.close()
        credential, http = self._credential, self._http
        self._credential = self._http = None
        if credential is not None:
            await credential.close()
        if http is not None:
            await http.close()
