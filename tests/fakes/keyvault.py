"""A fake Azure Key Vault secrets data plane, good enough for the real azure SDK.

What it does, as the real service does (see research/keyvault-and-managed-identity.md):

- HTTPS only; a request without a bearer token, or with one the fake identity never issued, gets
  401 with `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"` (the SDK's challenge flow).
- `api-version` is required on every call (any value is accepted).
- `GET /secrets/{name}`, `/secrets/{name}/` (latest), `/secrets/{name}/{version}`,
  `GET /secrets` (paged, `maxresults` 1..25, default 25, absolute `nextLink` with `$skiptoken`),
  `GET /secrets/{name}/versions` (paged the same way).
- Names are matched case-insensitively and must match `^[0-9A-Za-z-]{1,127}$` (else 400 BadParameter);
  versions are 32 lowercase hex characters; timestamps are integer epoch seconds.
- Disabled → 403 Forbidden / SecretDisabled. Unknown → 404 SecretNotFound.
  Expired or not-yet-valid secrets are still returned (200): `exp`/`nbf` are informational.

Failure injection for tests: `set_latency`, `throttle` (429 Throttled, optionally with Retry-After),
`limit` (a vault-wide allowance of n requests per window, as Key Vault's service limit: past it,
429 with the time left in the window as Retry-After; Key Vault sends whole seconds, the double the
exact time left with millisecond precision, so a client that honours it can be judged against the floor),
`fail` (5xx; `fail(math.inf)` is an outage until `fail(0)`), `forbid` (403 ForbiddenByRbac, or
AccessDenied for a vault using access policies), `hold`/`hang` and `release` (requests are accepted and
held open, unanswered, until released: a hung vault, and the way a test shows a caller did not wait
on the vault), and `go_down`/`come_up`. `go_down` closes the listening socket and drops open connections, so clients
see *connection refused* (not a 503): that is what an unreachable vault looks like to the SDK.

Injected throttling and failures apply to authenticated requests only, so "the next n requests"
means n requests that would otherwise have been served.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from ._server import BackgroundServer
from .identity import FakeManagedIdentity, TokenRegistry
from .tls import TestCertificates

DEFAULT_TENANT = "8f6b0c3e-1d2a-4c5b-9e7f-0a1b2c3d4e5f"
RESOURCE = "https://vault.azure.net"
_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_VERSION = re.compile(r"^[0-9a-fA-F]{32}$")
_PAGE_MAX = 25

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _epoch(value: int | float | datetime | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp())
    return int(value)


@dataclass
class _Version:
    version: str
    value: str
    enabled: bool
    exp: int | None
    nbf: int | None
    content_type: str | None
    tags: dict[str, str]
    created: int
    updated: int

    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "enabled": self.enabled,
            "created": self.created,
            "updated": self.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        }
        if self.exp is not None:
            attributes["exp"] = self.exp
        if self.nbf is not None:
            attributes["nbf"] = self.nbf
        return attributes


@dataclass
class _Secret:
    name: str  # as first created; lookups are case-insensitive
    versions: list[_Version] = field(default_factory=list)  # oldest first

    @property
    def latest(self) -> _Version:
        return self.versions[-1]


def _error(status: int, code: str, message: str, inner: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner is not None:
        error["innererror"] = {"code": inner}
    return web.json_response({"error": error}, status=status, headers=headers)


#: The origin (scheme://host[:port]) of the request being answered.
_ORIGIN: contextvars.ContextVar[str | None] = contextvars.ContextVar("fake_vault_origin", default=None)


class FakeKeyVault(BackgroundServer):
    """The Key Vault secrets API on `https://127.0.0.1:<port>`.

    `identity`: a `FakeManagedIdentity` (or its `TokenRegistry`) whose tokens are the only ones
    accepted; `None` accepts any bearer token. `certificates`: the test CA and server certificate.
    """

    def __init__(
        self,
        certificates: TestCertificates,
        *,
        identity: FakeManagedIdentity | TokenRegistry | None = None,
        tenant: str = DEFAULT_TENANT,
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
    ) -> None:
        super().__init__(ssl_context=certificates.server_context(), host=host, port=port)
        # What ids and nextLinks name (`https://<name>.vault.azure.net`, for a client that reaches
        # this double by a vault's own name); the listening address by default.
        self.public_url = public_url
        self.tenant = tenant
        self._tokens = identity.tokens if isinstance(identity, FakeManagedIdentity) else identity
        self._secrets: dict[str, _Secret] = {}
        self._counts: Counter[str] = Counter()
        self._log: list[tuple[str, str, dict[str, str]]] = []
        self._arrivals: list[tuple[float, str]] = []
        self._request_ids: list[str | None] = []
        self._user_agents: list[str] = []
        self._latency = 0.0
        self._throttle_left = 0
        self._retry_after: float | None = None
        self._fail_left: float = 0
        self._redirect_left = 0
        self._redirect_to = ""
        self._fail_status = 503
        self._forbidden = False
        self._access_policy = False
        self._broken: dict[str, int] = {}
        # When True, error answers quote the request's Authorization header (and a broken secret's
        # value), as a verbose proxy might: the bridge must keep them out of messages and logs.
        self.echo_requests = False
        self._in_flight = 0
        self._max_in_flight = 0
        self._reads_in_flight = 0
        self._max_reads_in_flight = 0
        # limit(): (requests per window, window seconds), the current window's start and count.
        self._limit: tuple[int, float] | None = None
        self._window_start = 0.0
        self._window_used = 0
        # The lower-cased names in listing order, kept until a secret is added or deleted.
        self._order: list[str] | None = None

    # -- control API: content ---------------------------------------------------------------------
    def set_secret(
        self,
        name: str,
        value: str,
        enabled: bool = True,
        exp: int | float | datetime | None = None,
        nbf: int | float | datetime | None = None,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Add a new version of `name` (creating the secret); returns the version id."""
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a valid Key Vault secret name")
        now = int(time.time())
        version = _Version(
            version=uuid.uuid4().hex,
            value=value,
            enabled=enabled,
            exp=_epoch(exp),
            nbf=_epoch(nbf),
            content_type=content_type,
            tags=dict(tags or {}),
            created=now,
            updated=now,
        )
        with self.lock:
            secret = self._secrets.get(name.lower())
            if secret is None:
                secret = self._secrets[name.lower()] = _Secret(name)
                self._order = None
            secret.versions.append(version)
        return version.version

    def disable(self, name: str, version: str | None = None) -> None:
        """Disable the latest version (or `version`) of `name`."""
        self._set_enabled(name, version, False)

    def enable(self, name: str, version: str | None = None) -> None:
        """Enable the latest version (or `version`) of `name` again."""
        self._set_enabled(name, version, True)

    def _set_enabled(self, name: str, version: str | None, enabled: bool) -> None:
        with self.lock:
            secret = self._secrets[name.lower()]
            target = secret.latest if version is None else self._find_version(secret, version)
            if target is None:
                raise KeyError(version)
            target.enabled = enabled
            target.updated = int(time.time())

    def delete(self, name: str) -> None:
        """Remove `name` and all its versions (as a purge would)."""
        with self.lock:
            if self._secrets.pop(name.lower(), None) is not None:
                self._order = None

    def names(self) -> list[str]:
        """The secret names held, in listing order."""
        with self.lock:
            return [self._secrets[key].name for key in self._listing_order()]

    def _listing_order(self) -> list[str]:
        """The keys of `_secrets` sorted (call under the lock)."""
        if self._order is None:
            self._order = sorted(self._secrets)
        return self._order

    # -- control API: behaviour -------------------------------------------------------------------
    def set_latency(self, seconds: float) -> None:
        """Delay every answer by `seconds` (concurrent requests overlap)."""
        with self.lock:
            self._latency = seconds

    def throttle(self, n: int, retry_after: float | None = None) -> None:
        """Answer the next `n` authenticated requests with 429 Throttled (+ `Retry-After`)."""
        with self.lock:
            self._throttle_left = n
            self._retry_after = retry_after

    def limit(self, requests: int | None, window: float = 10.0) -> None:
        """Allow `requests` authenticated requests per `window` seconds vault-wide (None: no limit).

        Windows are fixed, the first one starting at the first request after this call; a request
        past the allowance gets 429 Throttled with `Retry-After` = the time left in the window.
        """
        with self.lock:
            self._limit = (requests, window) if requests is not None else None
            self._window_start = -math.inf
            self._window_used = 0

    def _over_limit(self) -> float | None:
        """Seconds left in the window when this request is past the allowance (call under the lock)."""
        if self._limit is None:
            return None
        allowed, window = self._limit
        now = time.monotonic()
        if not math.isfinite(self._window_start):
            self._window_start = now
        elif now - self._window_start >= window:
            # Windows follow each other from the first request: n * window after it.
            self._window_start += math.floor((now - self._window_start) / window) * window
            self._window_used = 0
        if self._window_used >= allowed:
            return max(self._window_start + window - now, 0.001)
        self._window_used += 1
        return None

    def fail(self, n: float, status: int = 503) -> None:
        """Answer the next `n` authenticated requests with `status` (5xx, no Retry-After);
        `math.inf`: every one until `fail(0)`."""
        with self.lock:
            self._fail_left = n
            self._fail_status = status

    def redirect(self, n: int, location: str) -> None:
        """Answer the next `n` authenticated requests with `307 Temporary Redirect` to `location`
        (its path and query are the request's)."""
        with self.lock:
            self._redirect_left = n
            self._redirect_to = location.rstrip("/")

    def forbid(self, forbidden: bool = True, *, access_policy: bool = False) -> None:
        """Refuse every authenticated request with 403: ForbiddenByRbac (a vault using Azure RBAC,
        no role assignment), or with `access_policy` AccessDenied (a vault using access policies)."""
        with self.lock:
            self._forbidden = forbidden
            self._access_policy = access_policy

    def break_secret(self, name: str, status: int = 500) -> None:
        """Make every GET of `name` (any version) answer `status` until `repair(name)`."""
        with self.lock:
            self._broken[name.lower()] = status

    def repair(self, name: str) -> None:
        """Undo `break_secret`."""
        with self.lock:
            self._broken.pop(name.lower(), None)

    # -- control API: observation -----------------------------------------------------------------
    def count(self, kind: str = "total") -> int:
        """Requests seen: `total`, `get`, `list`, `versions`, `challenge` (401s), `throttled` (429s),
        `limited` (the 429s `limit` caused), `failed`."""
        with self.lock:
            return self._counts[kind]

    @property
    def log(self) -> list[tuple[str, str, dict[str, str]]]:
        """Every request as (method, path, query), oldest first."""
        with self.lock:
            return list(self._log)

    @property
    def arrivals(self) -> list[tuple[float, str]]:
        """When each request arrived (time.monotonic()) and what it was: `list` (a page of
        `GET /secrets`), `read` (a secret's value) or `other`; oldest first."""
        with self.lock:
            return list(self._arrivals)

    @property
    def request_ids(self) -> list[str | None]:
        """Each request's `x-ms-client-request-id` (None when it had none), oldest first."""
        with self.lock:
            return list(self._request_ids)

    @property
    def user_agents(self) -> list[str]:
        """Each request's `User-Agent` ("" when it had none), oldest first."""
        with self.lock:
            return list(self._user_agents)

    @property
    def max_in_flight(self) -> int:
        """The most requests that were being answered at the same time."""
        with self.lock:
            return self._max_in_flight

    @property
    def reads_in_flight(self) -> int:
        """Secret reads that have arrived and are not answered yet."""
        with self.lock:
            return self._reads_in_flight

    @property
    def max_reads_in_flight(self) -> int:
        """The most secret reads (`GET /secrets/{name}[/{version}]`) being answered at the same time."""
        with self.lock:
            return self._max_reads_in_flight

    def reset_counters(self) -> None:
        """Zero the counters, the log and the `max_*in_flight` (content stays)."""
        with self.lock:
            self._counts.clear()
            self._log.clear()
            self._arrivals.clear()
            self._request_ids.clear()
            self._user_agents.clear()
            self._max_in_flight = self._in_flight
            self._max_reads_in_flight = self._reads_in_flight

    # -- server -----------------------------------------------------------------------------------
    def _origin(self) -> str:
        """`public_url` when set, else the vault's address as the client named it (ids and nextLinks
        carry it, as the real service's do), so one double answers under a vault's own name and under
        127.0.0.1 alike."""
        return self.public_url or _ORIGIN.get() or self.url

    @web.middleware
    async def _remember_origin(self, request: web.Request, handler: Any) -> web.StreamResponse:
        token = _ORIGIN.set(f"{self.scheme}://{request.host}" if request.host else None)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            _ORIGIN.reset(token)

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._remember_origin, self._middleware])
        app.router.add_get("/secrets", self._list_secrets)
        app.router.add_get("/secrets/", self._list_secrets)
        app.router.add_get("/secrets/{name}/versions", self._list_versions)
        app.router.add_get("/secrets/{name}", self._get_secret)
        app.router.add_get("/secrets/{name}/", self._get_secret)
        app.router.add_get("/secrets/{name}/{version}", self._get_secret)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    def _challenge(self, message: str) -> web.Response:
        with self.lock:
            self._counts["challenge"] += 1
        header = f'Bearer authorization="https://login.microsoftonline.com/{self.tenant}", resource="{RESOURCE}"'
        return _error(401, "Unauthorized", message, headers={"WWW-Authenticate": header})

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        segments = request.path.strip("/").split("/")
        read = (request.method == "GET" and segments[0] == "secrets" and len(segments) in (2, 3)
                and not (len(segments) == 3 and segments[2] == "versions"))
        with self.lock:
            self._counts["total"] += 1
            self._log.append((request.method, request.path, dict(request.query)))
            kind = "list" if segments == ["secrets"] else "read" if read else "other"
            self._arrivals.append((time.monotonic(), kind))
            self._request_ids.append(request.headers.get("x-ms-client-request-id"))
            self._user_agents.append(request.headers.get("User-Agent", ""))
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            if read:
                self._reads_in_flight += 1
                self._max_reads_in_flight = max(self._max_reads_in_flight, self._reads_in_flight)
            latency = self._latency
        try:
            if latency:
                await asyncio.sleep(latency)
            return await self._serve(request, handler)
        finally:
            with self.lock:
                self._in_flight -= 1
                if read:
                    self._reads_in_flight -= 1

    async def _serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if "api-version" not in request.query:
            return _error(400, "BadParameter",
                          "The api-version query parameter (?api-version=) is required for all requests")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return self._challenge("AKV10000: Request is missing a Bearer or PoP token.")
        quoted = f" (the request carried Authorization: {scheme} {token})" if self.echo_requests else ""
        if self._tokens is not None and token not in self._tokens:
            return self._challenge("AKV10022: Invalid audience or token." + quoted)
        with self.lock:
            over = self._over_limit()
            if over is not None:
                self._counts["throttled"] += 1
                self._counts["limited"] += 1
                retry_after: float | None = math.ceil(over * 1000) / 1000
                throttled = True
            elif self._throttle_left > 0:
                self._throttle_left -= 1
                self._counts["throttled"] += 1
                retry_after = self._retry_after
                throttled = True
            else:
                throttled = False
            if not throttled and self._fail_left > 0:
                self._fail_left -= 1
                self._counts["failed"] += 1
                fail_status: int | None = self._fail_status
            else:
                fail_status = None
            redirect_to = ""
            if fail_status is None and not throttled and self._redirect_left > 0:
                self._redirect_left -= 1
                redirect_to = self._redirect_to + request.path_qs
            forbidden, access_policy = self._forbidden, self._access_policy
        if throttled:
            headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
            return _error(429, "Throttled",
                          "Request was not processed because too many requests were received. "
                          "Reason: VaultRequestTypeLimitReached" + quoted, headers=headers)
        if redirect_to:
            return web.Response(status=307, headers={"Location": redirect_to})
        if fail_status is not None:
            code = "ServiceUnavailable" if fail_status == 503 else "InternalServerError"
            return _error(fail_status, code, "The service is temporarily unavailable (injected by the test)." + quoted)
        if forbidden and access_policy:
            return _error(403, "Forbidden",
                          "The user, group or application 'appid=00000000-0000-0000-0000-00000000000a;"
                          f"iss=https://sts.windows.net/{self.tenant}/' does not have secrets get permission on "
                          "key vault 'fakevault;location=westeurope'. For help resolving this issue, please see "
                          "https://go.microsoft.com/fwlink/?linkid=2125287", inner="AccessDenied")
        if forbidden:
            return _error(403, "Forbidden",
                          "Caller is not authorized to perform action on resource. "
                          "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'" + quoted,
                          inner="ForbiddenByRbac")
        return await handler(request)

    def _find_version(self, secret: _Secret, version: str) -> _Version | None:
        wanted = version.lower()
        return next((v for v in secret.versions if v.version == wanted), None)

    def _bundle(self, secret: _Secret, version: _Version) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "value": version.value,
            "id": f"{self._origin()}/secrets/{secret.name}/{version.version}",
            "attributes": version.attributes(),
            "tags": dict(version.tags),
        }
        if version.content_type is not None:
            bundle["contentType"] = version.content_type
        return bundle

    def _item(self, secret: _Secret, version: _Version, *, versioned: bool) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": f"{self._origin()}/secrets/{secret.name}" + (f"/{version.version}" if versioned else ""),
            "attributes": version.attributes(),
            "tags": dict(version.tags),
        }
        if version.content_type is not None:
            item["contentType"] = version.content_type
        return item

    @staticmethod
    def _not_found(shown: str) -> web.Response:
        return _error(
            404, "SecretNotFound",
            f"A secret with (name/id) {shown} was not found in this key vault. If you recently deleted "
            "this secret you may be able to recover it using the correct recovery command. For help "
            "resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
        )

    @staticmethod
    def _bad_name(name: str) -> web.Response:
        return _error(400, "BadParameter", f"The request URI contains an invalid name: {name}")

    async def _get_secret(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        version = request.match_info.get("version", "")
        with self.lock:
            self._counts["get"] += 1
        if not _NAME.match(name):
            return self._bad_name(name)
        if version and not _VERSION.match(version):
            return self._not_found(f"{name}/{version}")
        with self.lock:
            broken = self._broken.get(name.lower())
            stored = self._secrets.get(name.lower())
        if broken is not None:
            quoted = ""
            if self.echo_requests:
                value = stored.latest.value if stored is not None else ""
                quoted = f" (its value is {value}; the request carried {request.headers.get('Authorization')})"
            return _error(broken, "InternalServerError" if broken >= 500 else "BadParameter",
                          f"This secret is broken (injected by the test): {broken}{quoted}")
        with self.lock:
            secret = self._secrets.get(name.lower())
            found = None
            if secret is not None:
                found = secret.latest if not version else self._find_version(secret, version)
            if secret is None or found is None:
                return self._not_found(f"{name}/{version}" if version else name)
            if not found.enabled:
                return _error(403, "Forbidden", "Operation get is not allowed on a disabled secret.",
                              inner="SecretDisabled")
            return web.json_response(self._bundle(secret, found))

    def _page_size(self, request: web.Request) -> int | web.Response:
        text = request.query.get("maxresults")
        if text is None:
            return _PAGE_MAX
        try:
            size = int(text)
        except ValueError:
            return _error(400, "BadParameter", f"Invalid maxresults value: {text}")
        if not 1 <= size <= _PAGE_MAX:
            return _error(400, "BadParameter",
                          f"The value of maxresults must be between 1 and {_PAGE_MAX}; got {size}")
        return size

    def _page(self, request: web.Request, size: int,
              items: Callable[[int, int], tuple[list[dict[str, Any]], int] | None]) -> web.Response:
        """One page: `items(start, stop)` builds that slice and says how many there are in all."""
        token = request.query.get("$skiptoken")
        start = 0
        if token:
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("offset:"))
            except ValueError:
                return _error(400, "BadParameter", "Invalid $skiptoken")
        built = items(start, start + size)
        if built is None:
            return self._not_found(request.match_info.get("name", ""))
        page, total = built
        next_link = None
        if start + size < total:
            skip = base64.urlsafe_b64encode(f"offset:{start + size}".encode()).decode()
            # Absolute, to this server, carrying its own api-version (the SDK swaps in its own).
            next_link = (f"{self._origin()}{request.path}?api-version={request.query['api-version']}"
                         f"&$skiptoken={skip}&maxresults={size}")
        return web.json_response({"value": page, "nextLink": next_link})

    async def _list_secrets(self, request: web.Request) -> web.Response:
        with self.lock:
            self._counts["list"] += 1
        size = self._page_size(request)
        if isinstance(size, web.Response):
            return size

        def items(start: int, stop: int) -> tuple[list[dict[str, Any]], int]:
            # Only the page's items are built: listing n secrets costs O(n), not O(n^2).
            with self.lock:
                order = self._listing_order()
                page = [self._secrets[key] for key in order[start:stop]]
                return [self._item(s, s.latest, versioned=False) for s in page], len(order)

        return self._page(request, size, items)

    async def _list_versions(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with self.lock:
            self._counts["versions"] += 1
        if not _NAME.match(name):
            return self._bad_name(name)
        size = self._page_size(request)
        if isinstance(size, web.Response):
            return size

        def items(start: int, stop: int) -> tuple[list[dict[str, Any]], int] | None:
            with self.lock:
                secret = self._secrets.get(name.lower())
                if secret is None:
                    return None
                versions = secret.versions[start:stop]
                return [self._item(secret, v, versioned=True) for v in versions], len(secret.versions)

        return self._page(request, size, items)

    async def _unknown(self, request: web.Request) -> web.Response:
        return _error(400, "BadParameter", f"The request URI contains an invalid name: {request.path}")


def vault_metadata(vault: FakeKeyVault, **extra: str) -> dict[str, str]:
    """Component metadata for a secretbridge keyvault instance on `vault`, failing fast.

    `vaultUri` + `disableChallengeResourceVerification` (127.0.0.1 is not a vault.azure.net
    host), one retry, a 10 s request timeout; `extra` adds or overrides properties.
    """
    metadata = {
        "vaultUri": vault.url,
        "disableChallengeResourceVerification": "true",
        "maxRetries": "1",
        "requestTimeout": "10s",
    }
    metadata.update(extra)
    return metadata
