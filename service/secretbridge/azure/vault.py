"""The Key Vault client: the HTTP session and `VaultReader`, which reads one vault.

`VaultReader` holds one vault, one credential and the azure `aio` SecretClient, and translates every
SDK failure into the project's errors with a message naming the secret, the vault and the identity
(never a value or a token). The `keyvault` backend reads through it; the `containerapps` backend uses
it to resolve Key Vault references with the same identity against whichever vault a reference names.

TLS trust: the clients trust what `ssl.create_default_context()` trusts when the session is built, so
`SSL_CERT_FILE` / `SSL_CERT_DIR` (a private CA for an emulator, a TLS-inspecting proxy) work even
when they are set after aiohttp was imported (aiohttp builds its own default context at import).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import ssl
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
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
from azure.core.pipeline import AsyncPipeline
from azure.core.pipeline.policies import UserAgentPolicy
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest

from secretbridge.azure.budget import BudgetPolicy, budget_for
from secretbridge.azure.causes import (
    PERMANENT_CAUSES,
    Cause,
    CauseAwareRetryPolicy,
    classify_cause,
    describe_cause,
    forbidden_kind,
)
from secretbridge.azure.health import HealthPolicy, identity_health, vault_health
from secretbridge.azure.hosts import is_azure_vault_host
from secretbridge.azure.identity import TokenRequestError
from secretbridge.azure.redaction import safe_cause
from secretbridge.core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    IdentityRefused,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SecretStoreError,
    Unavailable,
)
from secretbridge.core.metadata import ParsedMetadata
from secretbridge.core.names import show_name
from secretbridge.core.probes import ProbeGate

logger = logging.getLogger(__name__)


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


#: Key Vault's largest page of a listing.
LIST_PAGE = 25


@dataclass(frozen=True)
class ListedSecret:
    """One secret of a listing: its name and its latest version's attributes (the SDK's names)."""

    name: str
    enabled: bool
    expires_on: datetime | None
    not_before: datetime | None
    updated_on: datetime | None


def _id_path(identifier: Any) -> list[str]:
    """The path of a Key Vault id (`https://<vault>/secrets/<name>[/<version>]`) split at `/`: `['', 'secrets', ...]`.

    By hand rather than `urlsplit`, which costs more than the rest of the parsing for ids that
    are all different (its cache never hits); ids carry no query or fragment.
    """
    text = str(identifier or "")
    scheme_end = text.find("://")
    slash = text.find("/", scheme_end + 3) if scheme_end >= 0 else -1
    return text[slash:].split("/") if slash >= 0 else [""]


#: `x-ms-client-request-id` values: GUID-shaped, unique in this process (a random prefix, then a
#: counter). azure-core's own (`RequestIdPolicy`) is a `uuid1` per request, which asks libuuid for
#: a clock with the GIL held (a file lock or a round trip to uuidd): 7 % of the loop's time in a
#: cold BulkGet of 1,000 here. The policy leaves a request that already has the header alone.
#: A count, not a generator: several loops (one per server in tests) may draw at once.
_REQUEST_ID_HEAD = str(uuid.uuid4())[:24]  # "xxxxxxxx-xxxx-xxxx-xxxx-": the counter fills the last group
_REQUEST_COUNT = itertools.count()


def _request_id() -> str:
    return f"{_REQUEST_ID_HEAD}{next(_REQUEST_COUNT) & 0xFFFFFFFFFFFF:012x}"


def _listed(item: Any) -> ListedSecret:
    if not isinstance(item, dict):
        raise ValueError("the vault's page holds an item that is not a secret")
    attributes = item.get("attributes") or {}
    # The id is https://<vault>/secrets/<name>.
    segments = _id_path(item.get("id"))
    return ListedSecret(
        name=segments[2] if len(segments) > 2 and segments[1] == "secrets" else "",
        enabled=attributes.get("enabled") is not False,
        expires_on=_epoch(attributes.get("exp")),
        not_before=_epoch(attributes.get("nbf")),
        updated_on=_epoch(attributes.get("updated")),
    )


@dataclass(frozen=True)
class VaultSecret:
    """A secret value read from a vault, with the attributes the store decides on."""

    name: str
    value: str
    version: str | None
    enabled: bool
    expires_on: datetime | None
    not_before: datetime | None
    content_type: str | None = None
    #: The vault made it for a certificate (its bundle has `kid` or `managed: true`).
    certificate: bool = False


@dataclass(frozen=True)
class VaultObject:
    """A certificate's or a key's bundle (`cer`, or the JWK in `key`), with its attributes."""

    bundle: dict[str, Any]
    enabled: bool
    expires_on: datetime | None
    not_before: datetime | None


@dataclass(frozen=True)
class Grant:
    """What an identity needs to read one kind of object: the least Azure RBAC role (and the usual
    alternative), or the access-policy permissions of the kind."""

    role: str
    alternative: str | None
    #: `az keyvault set-policy` flag and value: `--secret-permissions get list`.
    permissions: str

    def rbac(self) -> str:
        """The role in words, for messages."""
        return f"the '{self.role}' role" + (f" (or '{self.alternative}')" if self.alternative else "")

    def policy(self) -> str:
        """The access-policy permissions in words, for messages."""
        flag, _, value = self.permissions.partition(" ")
        kind = flag.removeprefix("--").removesuffix("-permissions")
        quoted = " and ".join(f"'{word}'" for word in value.split())
        return f"{quoted} {kind} permission" + ("s" if " " in value else "")


#: A certificate's private key is its secret: reading it is a secret read, whatever the object
#: type. The public parts need only the Key Vault Reader role (metadata and public material).
GRANTS: dict[str, Grant] = {
    "secret": Grant("Key Vault Secrets User", None, "--secret-permissions get list"),
    "certificate": Grant("Key Vault Reader", "Key Vault Certificate User", "--certificate-permissions get"),
    "key": Grant("Key Vault Reader", "Key Vault Crypto User", "--key-permissions get"),
}


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
        transport: AioHttpTransport,
        metadata: ParsedMetadata | None = None,
    ) -> None:
        from azure.keyvault.secrets import __version__ as sdk_version

        # The policy SecretClient itself authenticates with (Key Vault's challenge flow, CAE,
        # resource verification): not exported at the package's top, pinned with it in pyproject.
        from azure.keyvault.secrets._shared import AsyncChallengeAuthPolicy
        from azure.keyvault.secrets.aio import SecretClient

        self.vault_url = vault_url.rstrip("/")
        self.identity = identity
        host = urlsplit(self.vault_url).hostname or self.vault_url
        self.label = label or (
            f"Key Vault '{host.split('.')[0]}'" if is_azure_vault_host(host) else f"Key Vault at {self.vault_url}"
        )
        self.max_retries = max_retries
        self._metadata = metadata
        # Every request to this vault host, from any instance in the process, spends one budget
        # and reports to one health mark (azure/health.py), as does the identity's token endpoint.
        netloc = urlsplit(self.vault_url).netloc
        self.budget = budget_for(netloc)
        self.health = vault_health(netloc)
        self.identity_health = identity_health(identity)
        timeout = metadata.get("requestTimeout") if metadata is not None else None
        # An attempt unanswered for its share of requestTimeout counts as failing (a hung vault).
        share = float(timeout) / (max_retries + 1) if timeout else None

        def health() -> HealthPolicy:
            return HealthPolicy(self.health, self.identity_health, share)

        # Each pipeline needs policies of its own (a policy links to the next one in its pipeline).
        def retries() -> CauseAwareRetryPolicy:
            return CauseAwareRetryPolicy(retry_total=max_retries, retry_status=max_retries)

        self._client = SecretClient(
            self.vault_url, credential, transport=transport, verify_challenge_resource=verify_challenge_resource,
            retry_policy=retries(), per_retry_policies=[BudgetPolicy(self.budget), health()],
        )
        self._api_version: str = self._client.api_version
        # What the SDK's UserAgentPolicy sends (with AZURE_HTTP_USER_AGENT when set), made once.
        self._user_agent = UserAgentPolicy(sdk_moniker=f"keyvault-secrets/{sdk_version}").user_agent
        # Reads and pages take a pipeline of the steps they need, over the same transport: retries,
        # the budget and the SDK's own Key Vault challenge policy (it shares the SDK's challenge
        # cache). The client's full pipeline adds request ids, a user agent, proxies, content
        # decoding, redirects, hooks, tracing and two logging policies: 0.6 ms of CPU per request
        # here, 40 % of a read, on BulkGet's critical chain. Ids and the user agent are set per
        # request below, proxies come from the session, bodies are parsed here, and Key Vault does
        # not redirect (a token must not follow one anywhere: a 3xx is a failure).
        self._pipeline: AsyncPipeline[HttpRequest, Any] = AsyncPipeline(transport, [
            retries(),
            BudgetPolicy(self.budget),
            health(),  # inside the budget: it sees each attempt sent, 429s resent by the budget included
            AsyncChallengeAuthPolicy(credential, verify_challenge_resource=verify_challenge_resource),
        ])

    def failing(self) -> str | None:
        """Why this vault (or the identity's token endpoint) is failing now, or None: from the
        latest attempt of any client in the process (`azure.health`)."""
        if self.budget.paused_until > self.budget.clock():
            # Every request to the vault waits out a Retry-After now: no refresh can answer sooner.
            return "the vault is throttling requests (waiting out its Retry-After)"
        return self.health.failing or self.identity_health.failing

    def watch_failure(self, future: asyncio.Future[str]) -> None:
        """Resolve `future` at the next failed attempt against this vault or the identity."""
        self.health.watch(future)
        self.identity_health.watch(future)

    def queued(self) -> float:
        """How long a request to this vault asked for now would wait for its turn (seconds, 0: none)."""
        return self.budget.behind()

    def probe_gate(self) -> ProbeGate:
        """The gate every reader of this vault host shares while it fails (core/probes.py)."""
        return self.health.probes

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

        Through the lean pipeline (the client's api-version, the challenge policy, retries
        honouring Retry-After, the budget, the transport), skipping the generated models, about a
        third of a read's CPU. A failed answer raises what `get_secret` would raise
        (`map_error` with the generated operation's map, else `HttpResponseError`), so `error`
        sees the same exceptions either way.
        """
        bundle = await self._fetch(f"/secrets/{quote(name, safe='')}/{quote(version or '', safe='')}")
        if not isinstance(bundle, dict) or not isinstance(bundle.get("value", ""), str):
            raise ValueError("the vault's answer is not a secret bundle")
        attributes = bundle.get("attributes") or {}
        # The id is https://<vault>/secrets/<name>/<version>: the vault's spelling of the name.
        segments = _id_path(bundle.get("id"))
        named = len(segments) > 2 and segments[1] == "secrets" and segments[2]
        content_type = bundle.get("contentType")
        return VaultSecret(
            name=segments[2] if named else name,
            value=bundle.get("value") or "",
            version=(segments[3] or None) if named and len(segments) > 3 else None,
            enabled=attributes.get("enabled") is not False,
            expires_on=_epoch(attributes.get("exp")),
            not_before=_epoch(attributes.get("nbf")),
            content_type=content_type if isinstance(content_type, str) else None,
            certificate=bool(bundle.get("kid")) or bundle.get("managed") is True,
        )

    async def get_object(
        self, kind: str, name: str, version: str | None = None, *, shown: str | None = None
    ) -> VaultObject:
        """A certificate (`GET /certificates/{name}/{version}`: `cer`, the leaf as DER) or a key
        (`GET /keys/{name}/{version}`: `key`, a JWK of the public part only); raises as `get`
        does, naming the object."""
        try:
            bundle = await self._fetch(f"/{kind}s/{quote(name, safe='')}/{quote(version or '', safe='')}")
            if not isinstance(bundle, dict):
                raise ValueError(f"the vault's answer is not a {kind} bundle")
            attributes = bundle.get("attributes") or {}
            return VaultObject(
                bundle=bundle,
                enabled=attributes.get("enabled") is not False,
                expires_on=_epoch(attributes.get("exp")),
                not_before=_epoch(attributes.get("nbf")),
            )
        except (AzureError, ValueError) as exc:
            raise self.error(exc, shown or name, version, kind=kind) from None

    async def _fetch(self, url: str) -> Any:
        """`GET url` (relative to the vault, or a nextLink on it) through the lean pipeline: the parsed
        body of a 200; otherwise what the SDK's generated operation would raise for that status."""
        if url.startswith("/"):
            url = self.vault_url + url
        if "api-version=" not in url:  # a nextLink names the version it was listed with
            url += ("&" if "?" in url else "?") + "api-version=" + self._api_version
        headers = {
            "Accept": "application/json", "User-Agent": self._user_agent, "x-ms-client-request-id": _request_id(),
        }
        response = (await self._pipeline.run(HttpRequest("GET", url, headers=headers))).http_response
        if response.status_code != 200:
            map_error(status_code=response.status_code, response=response, error_map=_GET_ERROR_MAP)
            raise HttpResponseError(response=response)
        return json.loads(response.content)

    async def list_properties(self) -> AsyncGenerator[ListedSecret, None]:
        """Every secret's latest attributes, `GET /secrets` page by page (25 a page), as the SDK's
        `list_properties_of_secrets` sends it.

        Through the lean pipeline and `json.loads` rather than the SDK's pager: the pages are BulkGet's
        critical chain (each is asked for once the previous one is in), and the pager's models cost
        CPU on that chain. A `nextLink` must stay on this vault: the token is never sent elsewhere.
        """
        url: str | None = f"/secrets?maxresults={LIST_PAGE}"
        while url:
            try:
                page = await self._fetch(url)
                if not isinstance(page, dict) or not isinstance(page.get("value") or [], list):
                    raise ValueError("the vault's answer is not a page of secrets")
                items = [_listed(item) for item in page.get("value") or []]
                url = page.get("nextLink") or None
                on_vault = isinstance(url, str) and url.lower().startswith(self.vault_url.lower() + "/")
                if url is not None and not on_vault:
                    raise ValueError("the vault's nextLink points away from the vault")
            except (AzureError, ValueError) as exc:
                raise self.error(exc, None, None, action="list the secrets") from None
            for item in items:
                yield item

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
        await self._pipeline.__aexit__()
        await self._client.close()

    def _from_vault(self, exc: AzureError) -> bool:
        response = getattr(exc, "response", None)
        request = getattr(response, "request", None)
        url = str(getattr(request, "url", "") or "")
        return url.lower().startswith(self.vault_url.lower())

    def error(
        self, exc: BaseException, shown: str | None, version: str | None, *, action: str | None = None,
        kind: str = "secret",
    ) -> SecretStoreError:
        """The project's error for an SDK failure while reading the `kind` (secret, certificate, key)
        `shown` (or doing `action`), its `cause` set to the kind of failure (`azure.causes.Cause`)
        for readiness and the doctor."""
        err = self._error(exc, shown, version, action, kind)
        if err.cause is None:
            err.cause = classify_cause(exc).value
        return err

    def _error(
        self, exc: BaseException, shown: str | None, version: str | None, action: str | None, kind: str = "secret"
    ) -> SecretStoreError:
        grant = GRANTS[kind]
        role, permission = grant.rbac(), grant.policy()
        if shown is not None:
            what = f"{kind} {show_name(shown)}" + (f" version {show_name(version)}" if version else "")
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
                return IdentityRefused(
                    f"{label} refused the token of {identity} ({status} Unauthorized) trying to {doing}; "
                    "the identity may belong to another tenant than the vault"
                )
            from azure.identity import CredentialUnavailableError

            kind = classify_cause(exc)
            token_cause = exc.message if isinstance(exc, TokenRequestError) else cause
            if (
                isinstance(exc, CredentialUnavailableError | TokenRequestError)
                or status is None or status >= 500 or status == 429
            ):
                return Unavailable(
                    f"could not get a token for {identity} to {doing} in {label}: {token_cause}",
                    cause=kind.value if kind in PERMANENT_CAUSES else Cause.TOKEN.value,
                )
            return IdentityRefused(
                f"the token endpoint refused {identity} ({status}) trying to {doing} in {label}: {cause}",
                cause=Cause.TOKEN.value,
            )
        if isinstance(exc, ServiceRequestTimeoutError | ServiceResponseTimeoutError):
            return DeadlineExceeded(f"{label} did not answer in time trying to {doing}: {type(exc).__name__}")
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            where = label if self.vault_url in label else f"{label} ({self.vault_url})"
            # "cannot resolve host …", "connection refused by …", "TLS handshake with … failed: …"
            return Unavailable(f"cannot reach {where} to {doing}: {describe_cause(exc) or cause}")
        if isinstance(exc, HttpResponseError):
            status = exc.status_code or 0
            code = exc.error.code if exc.error is not None else None
            inner = _inner_code(exc)
            reason = "/".join(str(c) for c in (code, inner) if c) or (exc.reason or "")
            if status == 403 and inner is not None and inner.endswith("Disabled"):
                return FailedPrecondition(f"{what} is disabled in {label}", cause=Cause.DISABLED.value)
            if status == 403:
                message = exc.error.message if exc.error is not None else None
                if forbidden_kind(inner, message) is Cause.FORBIDDEN_ACCESS_POLICY:
                    return PermissionDenied(
                        f"{identity} may not {doing} in {label} (403 {reason}): the vault uses access "
                        f"policies; give the identity {permission} in it (or move the "
                        f"vault to Azure RBAC and grant {role})",
                        cause=Cause.FORBIDDEN_ACCESS_POLICY.value,
                    )
                return PermissionDenied(
                    f"{identity} may not {doing} in {label} (403 {reason}): grant it "
                    f"{role} on the vault (or {permission} in the vault's access policy)",
                    cause=Cause.FORBIDDEN_RBAC.value,
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
