"""The `keyvault` backend: Azure Key Vault secrets through a managed identity.

Two layers:

- `VaultReader`: one vault, one credential, the azure `aio` SecretClient, and the translation of
  every SDK failure into the project's errors with a message that names the secret, the vault and
  the identity (never a value or a token). The `containerapps` backend uses it too, to resolve
  `@Microsoft.KeyVault(...)` references (`parse_reference`, `parse_secret_uri`) with the same
  identity against whichever vault a reference names.
- `KeyVaultStore`: the `SecretStore` built from a Component's metadata: vault selection, name
  mapping and `keyPrefix`, multi-valued secrets, expiry, and a BulkGet that lists every page and
  fetches values concurrently under a bound.

TLS trust: the clients trust what `ssl.create_default_context()` trusts when the store opens, so
`SSL_CERT_FILE` / `SSL_CERT_DIR` (a private CA for an emulator, a TLS-inspecting proxy) work even
when they are set after aiohttp was imported (aiohttp builds its own default context at import).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
    map_error,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest

from secretbridge.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SecretStoreError,
    Unavailable,
)
from secretbridge.identity import (
    AZURE_PROPERTIES,
    AzureEnvironment,
    TokenRequestError,
    build_credential,
    describe_identity,
    environment_of,
    parse_environment,
    safe_cause,
)
from secretbridge.metadata import Kind, ParsedMetadata, Property
from secretbridge.stores.base import JSON_MULTI_VALUED, SecretStore, json_members

logger = logging.getLogger(__name__)

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
_NOT_NAME_CHARS = re.compile(r"[^0-9A-Za-z-]")
_VAULT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
_PREFIX = re.compile(r"^[0-9A-Za-z-]{0,126}$")
_DEFAULT_TIMEOUT = 30.0
_SHOWN = 80


def _show(name: str) -> str:
    """A name as messages show it: quoted, escaped, cut when long (names come from callers)."""
    return repr(name if len(name) <= _SHOWN else name[:_SHOWN] + "…")


def _is_azure_vault_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in _AZURE_VAULT_DOMAINS)


# ---------------------------------------------------------------------------------------------
# Key Vault references


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
            f"{_show(uri)} is not a Key Vault secret URI "
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
    if not _VAULT_NAME.match(vault) or not SECRET_NAME.match(name):
        raise InvalidArgument(f"a Key Vault reference names an invalid vault or secret ({_show(vault)}, "
                              f"{_show(name)})")
    return SecretRef(
        vault_url=f"https://{vault}.{VAULT_SUFFIXES[environment]}",
        name=name,
        version=fields.get("secretversion") or None,
    )


# ---------------------------------------------------------------------------------------------
# HTTP plumbing


class HttpSession:
    """One aiohttp session (one connection pool, one TLS context) shared by a store's clients.

    The TLS context is made when the store opens, so it reflects `SSL_CERT_FILE` at that moment.
    Connections are kept alive and reused; the pool holds up to `connections` at once (BulkGet's
    readers, concurrent Gets and a listing must not queue behind aiohttp's default of 100).
    Proxies come from the environment (`HTTPS_PROXY`, `NO_PROXY`, ...) when it names any: only
    then is aiohttp's `trust_env` on, because it costs two thread-pool round trips per request
    (a `.netrc` lookup and a proxy lookup), a good part of a vault read's CPU.
    """

    def __init__(self, session: Any, *, connection_timeout: float, read_timeout: float) -> None:
        self._session = session
        self._connection_timeout = connection_timeout
        self._read_timeout = read_timeout

    @classmethod
    async def create(
        cls, *, connection_timeout: float, read_timeout: float, connections: int = 100
    ) -> HttpSession:
        """Build the session on the running loop (reading CA files happens in a thread)."""
        import urllib.request

        import aiohttp

        def make_context() -> tuple[ssl.SSLContext, bool]:
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            return context, any(scheme != "no" for scheme in urllib.request.getproxies())  # NO_PROXY alone: none

        context, proxied = await asyncio.to_thread(make_context)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=connections, limit_per_host=0),
            # As azure-core's own transport: honour HTTPS_PROXY/NO_PROXY (when set), keep no
            # cookies, hand the SDK the raw body.
            trust_env=proxied,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )
        return cls(session, connection_timeout=connection_timeout, read_timeout=read_timeout)

    def transport(self) -> AioHttpTransport:
        """A transport over the shared session; closing it leaves the session open."""
        return AioHttpTransport(
            session=self._session,
            session_owner=False,
            connection_timeout=self._connection_timeout,
            read_timeout=self._read_timeout,
        )

    async def close(self) -> None:
        await self._session.close()


# ---------------------------------------------------------------------------------------------
# One vault


#: The errors the SDK's generated `get_secret` raises for these statuses (any other failure is an
#: `HttpResponseError`); `VaultReader.error` turns both into the project's errors.
_GET_ERROR_MAP: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
    304: ResourceNotModifiedError,
}


def _epoch(value: Any) -> datetime | None:
    """A bundle's `exp`/`nbf` (integer seconds since the epoch) as a UTC datetime."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("the vault's answer has a date that is not a number of seconds")
    return datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True)
class VaultSecret:
    """A secret value read from a vault, with the attributes the store decides on."""

    name: str
    value: str
    version: str | None
    enabled: bool
    expires_on: datetime | None
    not_before: datetime | None


class VaultReader:
    """Reads secrets from one vault with a credential it does not own.

    `identity` is the credential in words (`describe_identity`), used in messages. SDK retries
    stay on (429 with `Retry-After` is waited out); `max_retries` caps them. Every failure comes
    out as a `SecretStoreError`; `shown` is the name as the app asked for it.
    """

    def __init__(
        self,
        vault_url: str,
        credential: AsyncTokenCredential,
        *,
        identity: str = "the configured identity",
        label: str | None = None,
        verify_challenge_resource: bool = True,
        max_retries: int = 3,
        transport: AioHttpTransport | None = None,
        metadata: ParsedMetadata | None = None,
    ) -> None:
        from azure.keyvault.secrets.aio import SecretClient

        self.vault_url = vault_url.rstrip("/")
        self.identity = identity
        host = urlsplit(self.vault_url).hostname or self.vault_url
        self.label = label or (
            f"Key Vault '{host.split('.')[0]}'" if _is_azure_vault_host(host) else f"Key Vault at {self.vault_url}"
        )
        self.max_retries = max_retries
        self._metadata = metadata
        kwargs: dict[str, Any] = {
            "verify_challenge_resource": verify_challenge_resource,
            "retry_total": max_retries,
            "retry_status": max_retries,
        }
        if transport is not None:
            kwargs["transport"] = transport
        self._client = SecretClient(self.vault_url, credential, **kwargs)

    async def get(self, name: str, version: str | None = None, *, shown: str | None = None) -> VaultSecret:
        """The latest (or `version`) of the vault secret `name`; raises `NotFound`, ... (see `error`)."""
        try:
            return await self._read(name, version)
        except (AzureError, ValueError) as exc:
            raise self.error(exc, shown or name, version) from None

    async def get_if_present(self, name: str, *, shown: str | None = None) -> VaultSecret | None:
        """As `get` (latest), but None when the secret does not exist or is disabled."""
        try:
            return await self._read(name, None)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            if _inner_code(exc) == "SecretDisabled":
                return None
            raise self.error(exc, shown or name, None) from None
        except (AzureError, ValueError) as exc:
            raise self.error(exc, shown or name, None) from None

    async def _read(self, name: str, version: str | None) -> VaultSecret:
        """`GET /secrets/{name}/{version}`, as the SDK's `get_secret` sends it, parsed here.

        `send_request` runs the client's own pipeline (its api-version, the challenge policy,
        retries honouring Retry-After, the transport) but skips the generated models, about a
        third of a read's CPU. A failed answer raises what `get_secret` would raise
        (`map_error` with the generated operation's map, else `HttpResponseError`), so `error`
        sees the same exceptions either way.
        """
        path = f"/secrets/{quote(name, safe='')}/{quote(version or '', safe='')}"
        response = await self._client.send_request(HttpRequest("GET", path, headers={"Accept": "application/json"}))
        if response.status_code != 200:
            map_error(status_code=response.status_code, response=response, error_map=_GET_ERROR_MAP)
            raise HttpResponseError(response=response)
        bundle = json.loads(response.content)
        if not isinstance(bundle, dict) or not isinstance(bundle.get("value", ""), str):
            raise ValueError("the vault's answer is not a secret bundle")
        attributes = bundle.get("attributes") or {}
        # The id is https://<vault>/secrets/<name>/<version>: the vault's spelling of the name.
        segments = urlsplit(str(bundle.get("id") or "")).path.split("/")
        named = len(segments) > 2 and segments[1] == "secrets" and segments[2]
        return VaultSecret(
            name=segments[2] if named else name,
            value=bundle.get("value") or "",
            version=(segments[3] or None) if named and len(segments) > 3 else None,
            enabled=attributes.get("enabled") is not False,
            expires_on=_epoch(attributes.get("exp")),
            not_before=_epoch(attributes.get("nbf")),
        )

    async def list_properties(self, page_size: int | None = None) -> AsyncGenerator[Any, None]:
        """Every secret's properties (latest version's attributes), following every page."""
        pager = self._client.list_properties_of_secrets(max_page_size=page_size)
        try:
            async for props in pager:
                yield props
        except (AzureError, ValueError) as exc:
            raise self.error(exc, None, None, action="list the secrets") from None

    async def check(self) -> None:
        """One cheap authenticated call (the first page of one secret's properties)."""
        pager = self._client.list_properties_of_secrets(max_page_size=1)
        try:
            async for page in pager.by_page():
                async for _ in page:
                    break
                break
        except (AzureError, ValueError) as exc:
            raise self.error(exc, None, None, action="list the secrets") from None

    async def close(self) -> None:
        await self._client.close()

    def _from_vault(self, exc: AzureError) -> bool:
        response = getattr(exc, "response", None)
        request = getattr(response, "request", None)
        url = str(getattr(request, "url", "") or "")
        return url.lower().startswith(self.vault_url.lower())

    def error(
        self, exc: BaseException, shown: str | None, version: str | None, *, action: str | None = None
    ) -> SecretStoreError:
        """The project's error for an SDK failure while reading `shown` (or doing `action`)."""
        if shown is not None:
            what = f"secret {_show(shown)}" + (f" version {_show(version)}" if version else "")
            doing = f"read {what}"
        else:
            what = "the secrets"
            doing = action or "read the secrets"
        label, identity = self.label, self.identity
        cause = safe_cause(exc, self._metadata)
        if isinstance(exc, ResourceNotFoundError):
            return NotFound(f"{what} was not found in {label}")
        if isinstance(exc, ClientAuthenticationError):
            status = getattr(exc, "status_code", None)
            if self._from_vault(exc):
                return PermissionDenied(
                    f"{label} refused the token of {identity} ({status} Unauthorized) trying to {doing}; "
                    "the identity may belong to another tenant than the vault"
                )
            from azure.identity import CredentialUnavailableError

            if (
                isinstance(exc, CredentialUnavailableError | TokenRequestError)
                or status is None or status >= 500 or status == 429
            ):
                return Unavailable(f"could not get a token for {identity} to {doing} in {label}: {cause}")
            return PermissionDenied(
                f"the token endpoint refused {identity} ({status}) trying to {doing} in {label}: {cause}"
            )
        if isinstance(exc, ServiceRequestTimeoutError | ServiceResponseTimeoutError):
            return DeadlineExceeded(f"{label} did not answer in time trying to {doing}: {type(exc).__name__}")
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            where = label if self.vault_url in label else f"{label} ({self.vault_url})"
            return Unavailable(f"cannot reach {where} to {doing}: {cause}")
        if isinstance(exc, HttpResponseError):
            status = exc.status_code or 0
            code = exc.error.code if exc.error is not None else None
            inner = _inner_code(exc)
            reason = "/".join(str(c) for c in (code, inner) if c) or (exc.reason or "")
            if status == 403 and inner == "SecretDisabled":
                return FailedPrecondition(f"{what} is disabled in {label}")
            if status == 403:
                return PermissionDenied(
                    f"{identity} may not {doing} in {label} (403 {reason}): grant it the "
                    "'Key Vault Secrets User' role on the vault (or 'get' and 'list' secret permissions "
                    "in the vault's access policy)"
                )
            if status == 400:
                return InvalidArgument(f"{label} refused the request to {doing} (400 {reason})")
            if status == 429:
                return Unavailable(
                    f"{label} throttled the request to {doing} (429 {reason}) past {self.max_retries} retries"
                )
            return Unavailable(f"{label} failed the request to {doing} ({status} {reason})")
        if isinstance(exc, ValueError) and "challenge" in str(exc).lower():
            return FailedPrecondition(
                f"{label} answered with an authentication challenge for another resource trying to {doing}; "
                "for an emulator or test double set disableChallengeResourceVerification: \"true\""
            )
        return Unavailable(f"{label} failed trying to {doing}: {cause}")


def _inner_code(exc: HttpResponseError) -> str | None:
    inner = exc.error.innererror if exc.error is not None else None
    code = inner.get("code") if isinstance(inner, dict) else None
    return str(code) if code else None


# ---------------------------------------------------------------------------------------------
# The store


KEYVAULT_PROPERTIES: tuple[Property, ...] = (
    Property(
        "vaultName",
        "The Key Vault's name (`myvault`); the host is `<vaultName>.<suffix of azureEnvironment>`. "
        "A full host such as `myvault.vault.azure.net` is accepted and sets the environment. "
        "Exactly one of vaultName and vaultUri.",
    ),
    Property(
        "vaultUri",
        "The vault's https URL, for emulators and test doubles (`https://127.0.0.1:8443`). "
        "Exactly one of vaultName and vaultUri.",
    ),
    Property(
        "disableChallengeResourceVerification",
        "Accept an authentication challenge whose resource does not match the vault's host. "
        "For emulators only; refused for a real Key Vault host.",
        Kind.BOOL,
        default=False,
    ),
    JSON_MULTI_VALUED,
    Property(
        "nameMapping",
        "How an app's secret name becomes a vault name: `none` as is, `dashes` turns `_` and `.` "
        "into `-` (Key Vault names allow only letters, digits and dashes).",
        default="none",
        choices=("none", "dashes"),
    ),
    Property(
        "keyPrefix",
        "Prepended to every vault name (one vault shared by environments: `prod-`); BulkGet lists "
        "only the secrets under it and strips it from the names it returns.",
        default="",
    ),
    Property(
        "allowExpired",
        "Serve secrets past their expiry (`exp`) or before their activation date (`nbf`); by default "
        "they are refused with FAILED_PRECONDITION and left out of BulkGet.",
        Kind.BOOL,
        default=False,
    ),
    Property(
        "bulkConcurrency",
        "How many secret values BulkGet reads from the vault at once, while it lists the next pages. "
        "Key Vault allows 4,000 GETs per 10 s per vault, shared by every client: a BulkGet of n secrets "
        "spends n of them however fast it goes, and 429s are waited out (maxRetries).",
        Kind.INT,
        default=32,
        minimum=1,
        maximum=256,
    ),
    Property(
        "bulkSkipErrors",
        "BulkGet leaves out (and logs by name) a secret it cannot read instead of failing.",
        Kind.BOOL,
        default=False,
    ),
    Property(
        "maxRetries",
        "Retries of one vault or token-endpoint call (the Azure SDK's retry_total/retry_status); "
        "429 with Retry-After is waited out within them.",
        Kind.INT,
        default=3,
        minimum=0,
        maximum=10,
    ),
)


class KeyVaultStore(SecretStore):
    """Secrets from one Azure Key Vault, read with the identity the metadata selects."""

    backend: ClassVar[str] = "keyvault"
    summary: ClassVar[str] = "Azure Key Vault, read through a managed identity (or workload identity, or a " \
        "service principal for development)."
    properties: ClassVar[tuple[Property, ...]] = KEYVAULT_PROPERTIES + AZURE_PROPERTIES
    supports_versions: ClassVar[bool] = True
    remote: ClassVar[bool] = True

    def __init__(self, metadata: ParsedMetadata, *, instance: str) -> None:
        super().__init__(metadata, instance=instance)
        self.vault_url, self.environment, self.vault_label = self._resolve_vault(metadata)
        self.verify_challenge_resource = not metadata.get("disableChallengeResourceVerification", False)
        host = urlsplit(self.vault_url).hostname or ""
        if not self.verify_challenge_resource and _is_azure_vault_host(host):
            raise InvalidArgument(
                f"metadata property 'disableChallengeResourceVerification' must not be true for {host}: "
                "it is a real Azure Key Vault host, where the challenge must be verified (the option "
                "exists for emulators and test doubles)"
            )
        prefix = metadata.get("keyPrefix") or ""
        if not _PREFIX.match(prefix):
            raise InvalidArgument(
                f"metadata property 'keyPrefix' may hold only letters, digits and '-' (Key Vault's rule for "
                f"names) and be at most 126 characters; got {_show(prefix)}"
            )
        self.key_prefix: str = prefix
        self.dashes = (metadata.get("nameMapping") or "none") == "dashes"
        self.allow_expired = bool(metadata.get("allowExpired", False))
        self.bulk_concurrency = int(metadata.get("bulkConcurrency") or 32)
        self.bulk_skip_errors = bool(metadata.get("bulkSkipErrors", False))
        self.max_retries = int(metadata.get("maxRetries") if metadata.get("maxRetries") is not None else 3)
        timeout = metadata.get("requestTimeout")
        self.timeout = float(timeout) if timeout else _DEFAULT_TIMEOUT
        self.identity = describe_identity(metadata)
        self._http: HttpSession | None = None
        self._credential: AsyncTokenCredential | None = None
        self._reader: VaultReader | None = None

    @staticmethod
    def _resolve_vault(metadata: ParsedMetadata) -> tuple[str, AzureEnvironment, str]:
        name, uri = metadata.get("vaultName"), metadata.get("vaultUri")
        if bool(name) == bool(uri):
            raise InvalidArgument(
                "exactly one of metadata properties 'vaultName' and 'vaultUri' must be set "
                f"({'both are' if name else 'neither is'})"
            )
        environment = environment_of(metadata)
        if name:
            name = name.strip().lower().rstrip(".")
            for env, suffix in VAULT_SUFFIXES.items():
                if name.endswith("." + suffix):
                    if metadata.given("azureEnvironment") and env is not environment:
                        raise InvalidArgument(
                            f"metadata property 'vaultName' is a host in {env.value}, but 'azureEnvironment' "
                            f"says {environment.value}"
                        )
                    name, environment = name[: -len(suffix) - 1], env
                    break
            if not _VAULT_NAME.match(name) or "--" in name:
                raise InvalidArgument(
                    f"metadata property 'vaultName' must be a Key Vault name (3-24 letters, digits and "
                    f"dashes, starting with a letter) or its host; got {_show(name)}"
                )
            return f"https://{name}.{VAULT_SUFFIXES[environment]}", environment, f"Key Vault '{name}'"
        parts = urlsplit(uri.strip())
        if parts.scheme.lower() != "https":
            raise InvalidArgument(
                f"metadata property 'vaultUri' must be an https URL (Key Vault refuses tokens over plain "
                f"HTTP); got {_show(uri)}"
            )
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (
            not parts.hostname or parts.username or parts.password or port == -1
            or parts.path not in ("", "/") or parts.query or parts.fragment
        ):
            raise InvalidArgument(
                f"metadata property 'vaultUri' must be https://<host>[:<port>] with no path, query or "
                f"credentials; got {_show(uri)}"
            )
        host = parts.hostname.lower()
        for env, suffix in VAULT_SUFFIXES.items():
            if host.endswith("." + suffix):
                environment = env
                return f"https://{parts.netloc}", environment, f"Key Vault '{host.split('.')[0]}'"
        return f"https://{parts.netloc}", environment, f"Key Vault at https://{parts.netloc}"

    # -- lifecycle --------------------------------------------------------------------------------
    async def open(self) -> None:
        """Build the HTTP session, the credential and the vault client on the server's loop."""
        # BulkGet's readers and its listing beside every Get the cache lets through at once.
        connections = self.bulk_concurrency + int(self.metadata.get("maxConcurrentRequests") or 32) + 2
        self._http = await HttpSession.create(
            connection_timeout=self.timeout, read_timeout=self.timeout, connections=max(100, connections)
        )
        self._credential = build_credential(
            self.metadata,
            transport=self._http.transport(),
            retry_total=self.max_retries,
            retry_status=self.max_retries,
        )
        self._reader = VaultReader(
            self.vault_url,
            self._credential,
            identity=self.identity,
            label=self.vault_label,
            verify_challenge_resource=self.verify_challenge_resource,
            max_retries=self.max_retries,
            transport=self._http.transport(),
            metadata=self.metadata,
        )

    async def close(self) -> None:
        """Close the vault client, the credential and the session, in that order."""
        reader, credential, http = self._reader, self._credential, self._http
        self._reader = self._credential = self._http = None
        if reader is not None:
            await reader.close()
        if credential is not None:
            await credential.close()
        if http is not None:
            await http.close()

    @property
    def reader(self) -> VaultReader:
        """The vault reader (after `open`); containerapps-style callers may share the credential."""
        if self._reader is None:
            raise FailedPrecondition(f"the keyvault store for {self.vault_label} is not open")
        return self._reader

    @property
    def credential(self) -> AsyncTokenCredential:
        """The store's credential (after `open`), to read other vaults with the same identity."""
        if self._credential is None:
            raise FailedPrecondition(f"the keyvault store for {self.vault_label} is not open")
        return self._credential

    async def check(self) -> None:
        """List one secret: proves the vault is reachable and the identity may list."""
        await self.reader.check()

    # -- names and values -------------------------------------------------------------------------
    def vault_name(self, name: str) -> str:
        """The vault's name for the app's `name` (mapping + prefix), or `InvalidArgument` saying why."""
        mapped = name.replace("_", "-").replace(".", "-") if self.dashes else name
        full = self.key_prefix + mapped
        if SECRET_NAME.match(full):
            return full
        if len(full) > 127:
            return self._bad_name(name, f"it would be {len(full)} characters long in the vault "
                                        f"(keyPrefix included) and the limit is 127")
        bad = sorted(set(_NOT_NAME_CHARS.findall(mapped)))
        shown_bad = ", ".join(repr(c) for c in bad[:8])
        hint = ""
        if not self.dashes and SECRET_NAME.match(self.key_prefix + name.replace("_", "-").replace(".", "-")):
            hint = '; set metadata nameMapping: "dashes" to map \'_\' and \'.\' to \'-\''
        return self._bad_name(name, f"Key Vault names allow only letters, digits and '-', and it holds "
                                    f"{shown_bad}{hint}")

    def _bad_name(self, name: str, why: str) -> str:
        raise InvalidArgument(f"the secret name {_show(name)} cannot be used with {self.vault_label}: {why}")

    def _shape(self, name: str, value: str) -> dict[str, str]:
        return json_members(name, value) if self.multi_valued else {name: value}

    def _validity_problem(self, expires_on: datetime | None, not_before: datetime | None) -> str | None:
        if self.allow_expired:
            return None
        now = datetime.now(UTC)
        if expires_on is not None and expires_on <= now:
            return f"expired at {expires_on.isoformat()}"
        if not_before is not None and not_before > now:
            return f"is not valid before {not_before.isoformat()}"
        return None

    # -- reads ------------------------------------------------------------------------------------
    async def get(self, name: str, version: str | None = None) -> dict[str, str]:
        """The latest (or `version`) of `name`; see the module docstring for errors."""
        vault_name = self.vault_name(name)
        secret = await self.reader.get(vault_name, version, shown=name)
        problem = self._validity_problem(secret.expires_on, secret.not_before)
        if problem is not None:
            raise FailedPrecondition(
                f"secret {_show(name)} in {self.vault_label} {problem}; set metadata allowExpired: "
                '"true" to serve it anyway'
            )
        return self._shape(name, secret.value)

    async def bulk_get(self, limit: int | None = None) -> dict[str, dict[str, str]]:
        """Every enabled, currently valid secret under `keyPrefix`, at most `limit` of them.

        Reads start as soon as the page naming a secret arrives, while the next pages are still
        being listed: `bulkConcurrency` readers take names in listing order. Listing stops once
        `limit` candidates are known. A secret that vanished or was disabled between the listing
        and the read is left out. One failed read (unless `bulkSkipErrors`) or a failed listing
        cancels everything still in flight, closes the listing and fails the call.
        """
        if limit is not None and limit <= 0:
            return {}
        reader = self.reader
        prefix = self.key_prefix.lower()
        order: list[str] = []  # app names, in listing order
        results: dict[str, dict[str, str]] = {}
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        readers = self.bulk_concurrency if limit is None else min(self.bulk_concurrency, limit)
        skipped = 0

        async def read_values() -> None:
            while (item := await queue.get()) is not None:
                app_name, vault_name = item
                try:
                    # Deleted or disabled since it was listed: as if it had not been listed.
                    secret = await reader.get_if_present(vault_name, shown=app_name)
                except SecretStoreError as exc:
                    if not self.bulk_skip_errors:
                        raise type(exc)(f"BulkGet stopped at secret {_show(app_name)}: {exc.message}") from None
                    logger.warning(
                        "BulkGet left out a secret it could not read",
                        extra={"instance": self.instance, "backend": self.backend, "secret": app_name,
                               "error": type(exc).__name__, "reason": exc.message},
                    )
                    continue
                if secret is not None:
                    results[app_name] = self._shape(app_name, secret.value)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(readers):
                    group.create_task(read_values())
                # A failed read cancels this body too: aclosing then closes the pager at once.
                async with contextlib.aclosing(reader.list_properties()) as listing:
                    async for props in listing:
                        vault_name: str = props.name or ""
                        if not vault_name.lower().startswith(prefix) or len(vault_name) == len(prefix):
                            continue
                        if props.enabled is False or self._validity_problem(props.expires_on, props.not_before):
                            skipped += 1
                            continue
                        app_name = vault_name[len(prefix):]
                        order.append(app_name)
                        queue.put_nowait((app_name, vault_name))
                        if limit is not None and len(order) >= limit:
                            break
                for _ in range(readers):
                    queue.put_nowait(None)  # one end mark per reader, after every name
        except BaseExceptionGroup as group_error:
            raise _first_store_error(group_error) from None
        if skipped:
            logger.debug(
                "BulkGet left out disabled or expired secrets",
                extra={"instance": self.instance, "backend": self.backend, "count": skipped},
            )
        # Listing order, whatever order the reads finished in.
        return {app_name: results[app_name] for app_name in order if app_name in results}


def _first_store_error(group: BaseExceptionGroup[Any]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_store_error(exc)
        if isinstance(exc, SecretStoreError):
            return exc
    return group.exceptions[0]


__all__ = [
    "KEYVAULT_PROPERTIES",
    "VAULT_SUFFIXES",
    "HttpSession",
    "KeyVaultStore",
    "SecretRef",
    "VaultReader",
    "VaultSecret",
    "parse_environment",
    "parse_reference",
    "parse_secret_uri",
]
