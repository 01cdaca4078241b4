"""`containerapps`: the Azure Container Apps secret set, mounted as a `Secret` volume.

Container Apps writes one file per secret into the volume (file name = secret
name, content = value). Underneath it is Kubernetes, whose kubelet writes secret
volumes with the *atomic writer*: the files live in a hidden `..<timestamp>`
directory, `..data` is a symlink to the current one, and every secret is a
symlink `name -> ..data/name`. An update writes a new timestamped directory and
renames a new `..data` link over the old one, so a reader that follows `..data`
sees either the old set or the new one, never a mixture. A plain directory of
regular files (a local test, an Azure Files share) is served too.

Reading rules, all of them about not trusting the volume's content as paths:

- A secret name is a file name, never a path: `/`, `.`, `..`, a leading `..`
  (the writer's bookkeeping), NUL and control characters are refused before the
  filesystem is touched.
- Files are read on every Get (they are small, on tmpfs), so a `..data` swap is
  visible at once; BulkGet scans the directory on a worker thread.
- Symlinks are followed only while their real path stays inside the volume;
  the file actually opened is checked again through `/proc/self/fd`, so a link
  swapped between the check and the open cannot leak a file from elsewhere.
- Values are served byte for byte (a trailing newline stays); a file that is
  not UTF-8 is refused with FAILED_PRECONDITION (gRPC strings must be UTF-8).

A value that is a Key Vault reference, `@Microsoft.KeyVault(SecretUri=...)` or
`@Microsoft.KeyVault(VaultName=...;SecretName=...[;SecretVersion=...])`, is
resolved through the keyvault backend's `VaultReader` with this instance's
identity, behind a `CachedStore` (cacheTTL, single flight, stale-on-error), so
versionless references pick up new versions within cacheTTL. References may
name only real Azure Key Vault hosts, plus hosts listed in
`keyVaultReferenceHosts` (emulators), so a tampered file cannot send the
identity's token to a server of its choosing.

The store is not `remote`: the instance layer would otherwise cache file reads
for cacheTTL and a volume update would take that long to show. The cache
properties are declared here and apply to reference resolution only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from secretbridge.cache import CACHE_PROPERTIES, CachedStore
from secretbridge.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SecretStoreError,
)
from secretbridge.identity import AZURE_PROPERTIES
from secretbridge.metadata import Kind, ParsedMetadata, Property
from secretbridge.names import show_name
from secretbridge.stores.base import JSON_MULTI_VALUED, SecretStore, json_members

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from secretbridge.vault import HttpSession, SecretRef, VaultReader

log = logging.getLogger(__name__)

DEFAULT_SECRETS_PATH = "/mnt/secrets"
#: The atomic writer's link to the current timestamped directory.
DATA_LINK = "..data"
#: Linux's limit on one path component.
MAX_FILE_NAME_BYTES = 255
#: Container Apps values are small (Key Vault caps its own at 25 KB); this only stops a stray
#: huge file from being loaded into memory and onto the wire.
MAX_VALUE_BYTES = 8 * 1024 * 1024
#: Container Apps' own rule for secret names (documented in docs/containerapps.md; other safe
#: file names are still served, since a volume's `path` may rename a file).
CONTAINER_APPS_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,251}[a-z0-9])?$")
#: Attempts at one read when the atomic writer removes the directory being read from under us.
_READ_ATTEMPTS = 3
_REFERENCE_PREFIX = "@microsoft.keyvault"
_AZURE_VAULT_HOST = re.compile(
    r"^[a-z0-9-]{3,24}\.(?:vault\.azure\.net|vault\.azure\.cn|vault\.usgovcloudapi\.net)$"
)


def _check_hosts(hosts: tuple[str, ...]) -> str | None:
    for host in hosts:
        if "/" in host or "@" in host or not host.strip(":"):
            return f"must list hosts as host or host:port (no scheme, path or user), got {host!r}"
    return None


CONTAINERAPPS_PROPERTIES: tuple[Property, ...] = (
    Property(
        "secretsPath",
        "The folder where the Container Apps `Secret` volume is mounted: one file per secret, named "
        "after it.",
        default=DEFAULT_SECRETS_PATH,
    ),
    JSON_MULTI_VALUED,
    Property(
        "resolveKeyVaultReferences",
        "Resolve values of the form `@Microsoft.KeyVault(...)` through Key Vault with this "
        "instance's identity; `false` serves them as the literal text.",
        Kind.BOOL,
        default=True,
    ),
    Property(
        "keyVaultReferenceHosts",
        "Comma-separated `host:port` entries a Key Vault reference may name besides real Azure "
        "Key Vault hosts; for emulators and test doubles only (the challenge's resource is not "
        "verified for them).",
        Kind.LIST,
        default=(),
        check=_check_hosts,
    ),
    Property(
        "maxRetries",
        "Retries of one Key Vault or token-endpoint call while resolving a reference (the Azure "
        "SDK's retry_total/retry_status); 429 with Retry-After is waited out within them.",
        Kind.INT,
        default=3,
        minimum=0,
        maximum=10,
    ),
)


# ---------------------------------------------------------------------------------------------
# Names


def check_secret_name(name: str) -> None:
    """Refuse a name that is not a plain file name in the volume (`InvalidArgument` saying why)."""
    shown = show_name(name)
    why: str | None = None
    if not name:
        why = "it is empty"
    elif "\x00" in name:
        why = "it holds a NUL character"
    elif "/" in name:
        why = "it holds '/'; a secret name is a file name in secretsPath, not a path"
    elif name in (".", ".."):
        why = "'.' and '..' name directories, not secrets"
    elif name.startswith(".."):
        why = "names starting with '..' belong to the volume's own bookkeeping (..data, ..<timestamp>)"
    else:
        control = next((c for c in name if unicodedata.category(c) == "Cc"), None)
        if control is not None:
            why = f"it holds the control character U+{ord(control):04X}"
        elif len(name.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
            why = f"a file name is at most {MAX_FILE_NAME_BYTES} bytes long"
    if why is not None:
        raise InvalidArgument(f"the secret name {shown} cannot be served from a Container Apps volume: {why}")


def _valid_name(name: str) -> bool:
    try:
        check_secret_name(name)
    except InvalidArgument:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Reading the volume


class _Skip(Exception):
    """An entry that is not a servable secret; `quiet` ones (directories, vanished files) are
    left out of BulkGet without a warning."""

    def __init__(self, error: SecretStoreError, *, quiet: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.quiet = quiet


def _inside(path: str, root: str) -> bool:
    return path.startswith(root + os.sep)


def _opened_path(fd: int) -> str | None:
    """The real path of an open file, from the kernel (None where /proc is not mounted)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


class Volume:
    """One mounted secret folder. Every method is synchronous and short; call them off the loop
    when a directory has to be scanned."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def root(self) -> str:
        """The mount's real path (resolved on each use, so a re-pointed secretsPath is followed)."""
        return os.path.realpath(self.path)

    def check(self) -> None:
        """Raise `FailedPrecondition` naming secretsPath unless it is a readable folder."""
        where = f"metadata property 'secretsPath' names {str(self.path)!r}"
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise FailedPrecondition(
                f"{where}, which does not exist (mount the Container Apps Secret volume there)"
            ) from None
        except OSError as err:
            raise FailedPrecondition(f"{where}, which cannot be used ({err.strerror})") from None
        if not stat.S_ISDIR(info.st_mode):
            raise FailedPrecondition(f"{where}, which is not a directory")
        try:
            os.listdir(self.path)
        except PermissionError:
            raise FailedPrecondition(f"{where}, which this process may not list") from None
        except OSError as err:
            raise FailedPrecondition(f"{where}, which cannot be listed ({err.strerror})") from None

    def names(self) -> list[str]:
        """Every candidate secret name: top-level entries, plus `..data`'s (a secret added by a
        swap is in `..data` a moment before its top-level link appears). Sorted."""
        root = self.root()
        found: set[str] = set()
        try:
            found.update(os.listdir(root))
        except OSError as err:
            raise self._gone(err.strerror) from None
        if DATA_LINK in found:
            # Not a folder, or mid-swap: then the top-level links are enough this time.
            with contextlib.suppress(OSError):
                found.update(os.listdir(os.path.join(root, DATA_LINK)))
        return sorted(e for e in found if not e.startswith(".."))

    def _gone(self, why: str | None) -> FailedPrecondition:
        return FailedPrecondition(
            f"metadata property 'secretsPath' names {str(self.path)!r}, which can no longer be listed ({why})"
        )

    def read(self, name: str) -> bytes:
        """The bytes of secret `name` (already checked by `check_secret_name`).

        Raises `_Skip` wrapping NotFound (none, a directory, not a regular file),
        PermissionDenied (a link leaving the volume, or an unreadable file) or FailedPrecondition.
        """
        for attempt in range(_READ_ATTEMPTS):
            root = self.root()
            real = self._locate(root, name)
            try:
                return self._read_inside(real, root, name)
            except FileNotFoundError:
                # The atomic writer removed the old timestamped directory between our resolving
                # and opening: resolve again, the new `..data` is in place by now.
                if attempt + 1 == _READ_ATTEMPTS:
                    raise _Skip(self._not_found(name), quiet=True) from None
        raise AssertionError("unreachable")

    def _not_found(self, name: str, why: str = "") -> NotFound:
        return NotFound(f"secret {show_name(name)} not found in {str(self.path)!r}{why}")

    def _locate(self, root: str, name: str) -> str:
        for folder in (root, os.path.join(root, DATA_LINK)):
            path = os.path.join(folder, name)
            if not os.path.lexists(path):
                continue
            real = os.path.realpath(path)
            if not _inside(real, root):
                raise _Skip(self._outside(name), quiet=False)
            return real
        if not os.path.isdir(root):
            raise _Skip(self._gone("it is gone or not a directory"), quiet=False)
        raise _Skip(self._not_found(name), quiet=True)

    def _outside(self, name: str) -> PermissionDenied:
        return PermissionDenied(
            f"secret {show_name(name)} is a symlink whose target is outside secretsPath "
            f"{str(self.path)!r}; it is not followed"
        )

    def _read_inside(self, real: str, root: str, name: str) -> bytes:
        # O_NOFOLLOW: `real` has no links left, so a link here was swapped in after the check.
        # O_NONBLOCK: opening a FIFO must not hang the loop.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(real, flags)
        except FileNotFoundError:
            raise
        except PermissionError:
            raise _Skip(
                PermissionDenied(
                    f"secret {show_name(name)} exists in {str(self.path)!r} but this process may not read "
                    "it (check the volume's file mode and the container's user)"
                ),
                quiet=False,
            ) from None
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _Skip(self._not_found(name, " (a symlink that does not resolve)"), quiet=False) from None
            raise _Skip(
                FailedPrecondition(f"secret {show_name(name)} cannot be opened ({err.strerror})"), quiet=False
            ) from None
        try:
            opened = _opened_path(fd)
            if opened is not None and not _inside(opened, root):
                raise _Skip(self._outside(name), quiet=False)
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise _Skip(self._not_found(name, " (it is a directory, not a secret)"), quiet=True)
            if not stat.S_ISREG(info.st_mode):
                raise _Skip(self._not_found(name, " (it is not a regular file)"), quiet=False)
            if info.st_size > MAX_VALUE_BYTES:
                raise _Skip(self._too_big(name), quiet=False)
            chunks: list[bytes] = []
            total = 0
            while True:
                chunk = os.read(fd, max(info.st_size - total, 0) + 65536)
                if not chunk:
                    break
                total += len(chunk)
                if total > MAX_VALUE_BYTES:
                    raise _Skip(self._too_big(name), quiet=False)
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as err:
            raise _Skip(
                FailedPrecondition(f"secret {show_name(name)} cannot be read ({err.strerror})"), quiet=False
            ) from None
        finally:
            os.close(fd)

    def _too_big(self, name: str) -> FailedPrecondition:
        return FailedPrecondition(
            f"secret {show_name(name)} is larger than {MAX_VALUE_BYTES // (1024 * 1024)} MiB and is not served"
        )


def decode(name: str, raw: bytes) -> str:
    """A file's bytes as text, or `FailedPrecondition` naming the secret when they are not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FailedPrecondition(
            f"secret {show_name(name)} is not UTF-8 text (invalid byte at offset {err.start}); secrets are "
            "served as text, so store binary values base64-encoded"
        ) from None


# ---------------------------------------------------------------------------------------------
# Key Vault references


class _ReferenceStore(SecretStore):
    """Key Vault secrets by URI, for the `CachedStore` in front of reference resolution.

    A cache key is the secret's URI without version (`https://<host>/secrets/<name>`); the
    version, when a reference pins one, is the cache's version. One reader per vault, all sharing
    the instance's credential and HTTP session.
    """

    backend: ClassVar[str] = "keyvault"
    summary: ClassVar[str] = "Key Vault references of a containerapps instance."
    remote: ClassVar[bool] = True

    def __init__(self, metadata: ParsedMetadata, *, instance: str) -> None:
        super().__init__(metadata, instance=instance)
        self._http: HttpSession | None = None
        self._credential: AsyncTokenCredential | None = None
        self._readers: dict[str, VaultReader] = {}
        self._identity = ""
        self.max_retries = int(metadata.get("maxRetries", 3))
        self._opening = asyncio.Lock()
        self._closed = False

    async def open(self) -> None:
        """Build the HTTP session and the credential; called on the first reference, not at Init.

        Most volumes hold no references, and building the TLS context (loading the CA bundle)
        and the credential costs more than serving the whole volume does.
        """
        async with self._opening:
            if self._closed:
                raise FailedPrecondition("Key Vault reference resolution is closed (the instance was replaced)")
            if self._credential is not None:
                return
            from secretbridge.identity import build_credential, describe_identity
            from secretbridge.vault import HttpSession

            timeout = float(self.metadata.get("requestTimeout") or 5.0)
            self._identity = describe_identity(self.metadata)
            http = await HttpSession.create(connection_timeout=timeout, read_timeout=timeout)
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
        if reader is None:
            from secretbridge.vault import VaultReader

            await self.open()
            assert self._http is not None and self._credential is not None
            reader = self._readers.get(vault_url)
            if reader is not None:
                return reader
            host = (urlsplit(vault_url).hostname or "").lower()
            reader = VaultReader(
                vault_url,
                self._credential,
                identity=self._identity,
                # Hosts outside Azure are emulators the Component listed by name; their challenge
                # names vault.azure.net, which verification would (rightly) refuse.
                verify_challenge_resource=bool(_AZURE_VAULT_HOST.match(host)),
                max_retries=self.max_retries,
                transport=self._http.transport(),
                metadata=self.metadata,
            )
            self._readers[vault_url] = reader
        return reader

    async def get(self, name: str, version: str | None = None) -> dict[str, str]:
        vault_url, _, secret = name.rpartition("/secrets/")
        reader = await self.reader(vault_url)
        found = await reader.get(secret, version)
        return {name: found.value}

    async def bulk_get(self, limit: int | None = None) -> dict[str, dict[str, str]]:
        raise NotImplementedError("references are resolved one by one")

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


@dataclass(frozen=True)
class _Target:
    """Where a reference points, ready for the cache."""

    key: str  # https://<host>/secrets/<name>
    version: str | None
    shown: str  # for messages: "secret 'db' in Key Vault 'kv'"


# ---------------------------------------------------------------------------------------------
# The store


class ContainerAppsStore(SecretStore):
    """Secrets from a mounted Container Apps `Secret` volume, Key Vault references resolved."""

    backend: ClassVar[str] = "containerapps"
    summary: ClassVar[str] = (
        "The Container Apps secret set mounted as a Secret volume (one file per secret); "
        "@Microsoft.KeyVault(...) values are resolved with the app's identity."
    )
    properties: ClassVar[tuple[Property, ...]] = (
        *CONTAINERAPPS_PROPERTIES,
        *AZURE_PROPERTIES,
        *CACHE_PROPERTIES,
    )

    def __init__(self, metadata: ParsedMetadata, *, instance: str) -> None:
        super().__init__(metadata, instance=instance)
        self.volume = Volume(Path(str(metadata["secretsPath"])).expanduser())
        self.resolve_references = bool(metadata["resolveKeyVaultReferences"])
        self.allowed_hosts = frozenset(h.strip().lower() for h in metadata["keyVaultReferenceHosts"])
        self._references: _ReferenceStore | None = None
        self._cache: CachedStore | None = None

    async def open(self) -> None:
        """Check secretsPath, and set up reference resolution (nothing is contacted yet)."""
        await asyncio.to_thread(self.volume.check)
        if self.resolve_references:
            self._references = _ReferenceStore(self.metadata, instance=self.instance)
            self._cache = CachedStore(self._references, self.metadata, instance=self.instance)
        log.info(
            "secret volume opened",
            extra={"instance": self.instance, "path": str(self.volume.path),
                   "key_vault_references": self.resolve_references},
        )

    async def check(self) -> None:
        """With failFast: the volume is readable and every reference in it resolves."""
        await self.bulk_get()

    async def close(self) -> None:
        cache, references = self._cache, self._references
        self._cache = self._references = None
        if cache is not None:
            await cache.close()
        if references is not None:
            await references.close()

    # -- reads ------------------------------------------------------------------------------------
    async def get(self, name: str, version: str | None = None) -> dict[str, str]:
        check_secret_name(name)
        try:
            # One small file on tmpfs: cheaper inline than a hop to a worker thread.
            raw = self.volume.read(name)
        except _Skip as skip:
            raise skip.error from None
        return await self._value(name, decode(name, raw))

    async def bulk_get(self, limit: int | None = None) -> dict[str, dict[str, str]]:
        texts = await asyncio.to_thread(self._scan)
        names = list(texts)[:limit] if limit is not None else list(texts)
        values = await asyncio.gather(*(self._value(name, texts[name]) for name in names), return_exceptions=True)
        result: dict[str, dict[str, str]] = {}
        for name, value in zip(names, values, strict=True):
            if isinstance(value, BaseException):
                if isinstance(value, SecretStoreError):
                    raise type(value)(f"BulkGet stopped at secret {show_name(name)}: {value.message}") from None
                raise value
            result[name] = value
        return result

    def _scan(self) -> dict[str, str]:
        """Every servable secret's text, on a worker thread; what is not servable is left out."""
        texts: dict[str, str] = {}
        for name in self.volume.names():
            if not _valid_name(name):
                log.warning(
                    "a file in the secret volume has a name that cannot be served; left out of BulkGet",
                    extra={"instance": self.instance, "secret": show_name(name)},
                )
                continue
            try:
                texts[name] = decode(name, self.volume.read(name))
            except _Skip as skip:
                if not skip.quiet:
                    log.warning(
                        "left out of BulkGet",
                        extra={"instance": self.instance, "secret": name, "reason": skip.error.message},
                    )
            except FailedPrecondition as err:
                log.warning(
                    "left out of BulkGet",
                    extra={"instance": self.instance, "secret": name, "reason": err.message},
                )
        return texts

    async def _value(self, name: str, text: str) -> dict[str, str]:
        if self.resolve_references and text.lstrip()[: len(_REFERENCE_PREFIX)].lower() == _REFERENCE_PREFIX:
            text = await self._resolve(name, text)
        return self._shape(name, text)

    def _shape(self, name: str, value: str) -> dict[str, str]:
        return json_members(name, value) if self.multi_valued else {name: value}

    # -- references -------------------------------------------------------------------------------
    def _target(self, name: str, text: str) -> _Target:
        """Parse and vet a reference; the literal is never echoed (it is the secret's value)."""
        from secretbridge.identity import environment_of
        from secretbridge.vault import parse_reference

        bad = f"secret {show_name(name)} holds a malformed Key Vault reference"
        try:
            ref: SecretRef | None = parse_reference(text, environment_of(self.metadata))
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
        netloc = host if port is None else f"{host}:{port}"
        if parts.username is not None or parts.password is not None or port == -1:
            raise FailedPrecondition(f"{bad}: its vault address is not a plain host[:port]")
        on_azure = bool(_AZURE_VAULT_HOST.match(host)) and port in (None, 443)
        if not on_azure and netloc not in self.allowed_hosts:
            raise PermissionDenied(
                f"secret {show_name(name)} is a Key Vault reference to host {netloc!r}, which is not a Key Vault "
                "host (*.vault.azure.net, *.vault.azure.cn, *.vault.usgovcloudapi.net); list it in "
                "keyVaultReferenceHosts if it is an emulator you trust with this identity's token"
            )
        if ref.version is not None and not re.fullmatch(r"[0-9A-Za-z]{1,64}", ref.version):
            raise FailedPrecondition(f"{bad}: its version is not a Key Vault version id")
        vault = host.split(".")[0] if on_azure else netloc
        return _Target(
            key=f"https://{netloc}/secrets/{ref.name}",
            version=ref.version,
            shown=f"secret {show_name(ref.name)} in Key Vault {vault!r}",
        )

    async def _resolve(self, name: str, text: str) -> str:
        target = self._target(name, text)
        cache = self._cache
        if cache is None:
            raise FailedPrecondition(f"secret {show_name(name)}: Key Vault reference resolution is not open")
        try:
            data = await cache.get(target.key, target.version)
        except SecretStoreError as err:
            raise type(err)(
                f"secret {show_name(name)} is a Key Vault reference to {target.shown} that cannot be "
                f"resolved: {err.message}"
            ) from None
        return data[target.key]
