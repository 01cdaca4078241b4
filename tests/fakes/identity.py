"""Fake Azure token endpoints: managed identity (two shapes) and Microsoft Entra ID.

- App Service / Functions / Container Apps: `GET $IDENTITY_ENDPOINT?api-version=2019-08-01&resource=…`
  with `X-IDENTITY-HEADER: $IDENTITY_HEADER`; answers `access_token`, `expires_on` (a string of epoch
  seconds), `resource`, `token_type`, `client_id`. The async credential needs `resource` in the answer.
- IMDS (VMs, AKS pod identity): `GET /metadata/identity/oauth2/token?api-version=…&resource=…` with
  `Metadata: true`, reached through `AZURE_POD_IDENTITY_AUTHORITY_HOST`; answers `expires_in` as well.
- Microsoft Entra ID's token endpoint, for workload identity and service principals:
  `POST /<tenant>/oauth2/v2.0/token` with a client assertion (the federated token) or a client secret,
  reached through `AZURE_AUTHORITY_HOST`. azure-identity insists on an https authority, so this style
  needs the fake started with `certificates=`.

Served over plain HTTP (as the managed-identity endpoints are) unless `certificates` is given.
Every request is recorded as a `TokenRequest`, so tests can assert which identity (system-assigned,
or which user-assigned one) asked. The tokens it issues go into `tokens`, which `FakeKeyVault`
consults to accept or refuse a bearer token.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from aiohttp import web

from ._server import BackgroundServer
from .tls import TestCertificates

#: Environment variables that steer azure-identity; tests remove them all before setting `env()`.
IDENTITY_ENV_VARS: tuple[str, ...] = (
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_TOKEN_CREDENTIALS",
)

APP_SERVICE_PATH = "/msi/token"
IMDS_PATH = "/metadata/identity/oauth2/token"
APP_SERVICE_API_VERSION = "2019-08-01"

# Query parameters that name a user-assigned identity, across SDK versions and sync/async
# (the async credential sends identity_config keys verbatim).
_IDENTITY_PARAMS = ("client_id", "mi_res_id", "msi_res_id", "object_id", "resource_id", "principal_id")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class TokenRegistry:
    """The bearer tokens a fake identity issued; shared with the fake vault.

    With `claims`, tokens are shaped as Microsoft Entra ID's are (a JWT: header.payload.signature,
    the payload carrying `oid`, `tid`, ...), with a meaningless signature; otherwise opaque.
    """

    def __init__(self, claims: dict[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}
        self.claims = claims

    def issue(self, identity: str) -> str:
        if self.claims is None:
            token = "fake-access-token-" + secrets.token_urlsafe(24)
        else:
            header = _b64url(json.dumps({"typ": "JWT", "alg": "RS256", "kid": "fake"}).encode())
            payload = _b64url(json.dumps({**self.claims, "uti": secrets.token_urlsafe(12)}).encode())
            token = f"{header}.{payload}.{_b64url(secrets.token_bytes(32))}"
        with self._lock:
            self._tokens[token] = identity
        return token

    def identity_of(self, token: str) -> str | None:
        """Which identity a token was issued to, or None if it was never issued (or revoked)."""
        with self._lock:
            return self._tokens.get(token)

    def revoke_all(self) -> None:
        """Forget every token, so the vault refuses what clients have cached."""
        with self._lock:
            self._tokens.clear()

    def __contains__(self, token: object) -> bool:
        with self._lock:
            return token in self._tokens

    def __iter__(self):  # type: ignore[no-untyped-def]
        with self._lock:
            return iter(list(self._tokens))


@dataclass(frozen=True)
class TokenRequest:
    """One request the token endpoint received."""

    style: str  # "appservice", "imds" or "entra"
    resource: str | None
    api_version: str | None
    client_id: str | None = None
    mi_res_id: str | None = None
    msi_res_id: str | None = None
    object_id: str | None = None
    resource_id: str | None = None
    principal_id: str | None = None
    status: int = 200
    other_params: dict[str, str] = field(default_factory=dict)

    @property
    def user_assigned(self) -> bool:
        return any(getattr(self, name) for name in _IDENTITY_PARAMS)


class FakeManagedIdentity(BackgroundServer):
    """The token endpoint of a managed identity, both App Service and IMDS style.

    `object_id`: the principal's object id, carried in JWT-shaped tokens (else tokens are opaque).
    `user_assigned`: client ids of the user-assigned identities "attached" to this
    fake host; `None` accepts any. Asking for an unknown one gets a 400, like the
    real endpoints ("identity not found"). `system_assigned=False` refuses requests
    that name no identity, as a host without a system-assigned identity does.
    """

    def __init__(
        self,
        *,
        user_assigned: Iterable[str] | None = None,
        system_assigned: bool = True,
        lifetime: int = 24 * 3600,
        registry: TokenRegistry | None = None,
        certificates: TestCertificates | None = None,
        client_secrets: dict[str, str] | None = None,
        federated_token: str = "fake-federated-service-account-token",
        object_id: str | None = None,
        certificate_clients: Iterable[str] = (),
    ) -> None:
        super().__init__(ssl_context=certificates.server_context() if certificates is not None else None)
        self.client_secrets = dict(client_secrets or {})
        # When True, refusals quote the credential received, as a verbose endpoint or a proxy's
        # error page might: what reaches a message or a log must still be scrubbed.
        self.echo_credentials = False
        # Service principals that sign in with a certificate: a signed JWT assertion (header carrying
        # the certificate's thumbprint) is accepted for them; the signature is not checked.
        self.certificate_clients = set(certificate_clients)
        self.federated_token = federated_token
        self.identity_header = "fake-identity-header-" + secrets.token_urlsafe(16)
        # object_id: tokens are JWTs naming that principal (`oid`), as real ones are.
        claims = None if object_id is None else {"oid": object_id, "tid": "8f6b0c3e-1d2a-4c5b-9e7f-0a1b2c3d4e5f",
                                                 "aud": "https://vault.azure.net"}
        self.tokens = registry or TokenRegistry(claims)
        self.user_assigned = None if user_assigned is None else set(user_assigned)
        self.system_assigned = system_assigned
        self.lifetime = lifetime
        self._requests: list[TokenRequest] = []
        self._fail_left: float = 0
        self._fail_status = 500

    # -- control API ------------------------------------------------------------------------------
    def env(self, style: str = "appservice") -> dict[str, str]:
        """The environment a process needs to use this endpoint.

        `appservice`: IDENTITY_ENDPOINT + IDENTITY_HEADER (Container Apps, App Service).
        `imds`: AZURE_POD_IDENTITY_AUTHORITY_HOST (the IMDS address override).
        """
        if style == "appservice":
            return {"IDENTITY_ENDPOINT": self.url + APP_SERVICE_PATH, "IDENTITY_HEADER": self.identity_header}
        if style == "imds":
            return {"AZURE_POD_IDENTITY_AUTHORITY_HOST": self.url}
        if style == "entra":
            return {"AZURE_AUTHORITY_HOST": self.url}
        raise ValueError(f"unknown style {style!r}; use 'appservice', 'imds' or 'entra'")

    @property
    def requests(self) -> list[TokenRequest]:
        """Every token request so far, oldest first."""
        with self.lock:
            return list(self._requests)

    def fail(self, n: float, status: int = 500) -> None:
        """Answer the next `n` token requests with `status` and an error body; `math.inf`: every one
        until `fail(0)` (the endpoint is down but answers; `go_down` refuses connections, `hold`
        accepts them and never answers)."""
        with self.lock:
            self._fail_left = n
            self._fail_status = status

    def issued(self) -> list[str]:
        """Every token issued so far (for scanning logs and messages)."""
        return list(self.tokens)

    # -- server -----------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(APP_SERVICE_PATH, self._app_service)
        app.router.add_get(IMDS_PATH, self._imds)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._entra)
        return app

    def _record(self, style: str, request: web.Request, status: int) -> None:
        query = dict(request.query)
        known = {name: query.pop(name, None) for name in _IDENTITY_PARAMS}
        resource = query.pop("resource", None)
        api_version = query.pop("api-version", None)
        entry = TokenRequest(
            style=style, resource=resource, api_version=api_version, status=status, other_params=query,
            **known,
        )
        with self.lock:
            self._requests.append(entry)

    def _check(self, request: web.Request) -> tuple[int, str] | None:
        with self.lock:
            if self._fail_left > 0:
                self._fail_left -= 1
                header = request.headers.get("X-IDENTITY-HEADER") if self.echo_credentials else None
                quoted = f" (request header X-IDENTITY-HEADER: {header})" if header else ""
                return self._fail_status, "the token service failed (injected by the test)" + quoted
        if not request.query.get("resource"):
            return 400, "resource is required"
        client_id = request.query.get("client_id")
        named = any(request.query.get(name) for name in _IDENTITY_PARAMS)
        if client_id and self.user_assigned is not None and client_id not in self.user_assigned:
            return 400, "Identity not found"
        if not named and not self.system_assigned:
            return 400, "No system-assigned identity is enabled on this host"
        return None

    def _token_body(self, request: web.Request, *, imds: bool) -> dict[str, str]:
        client_id = request.query.get("client_id") or "00000000-0000-0000-0000-00000000000a"
        identity = request.query.get("client_id") or request.query.get("mi_res_id") or "system"
        now = int(time.time())
        body = {
            "access_token": self.tokens.issue(identity),
            "expires_on": str(now + self.lifetime),
            "resource": request.query["resource"],
            "token_type": "Bearer",
            "client_id": client_id,
        }
        if imds:
            body.update(
                expires_in=str(self.lifetime), ext_expires_in=str(self.lifetime), not_before=str(now)
            )
        return body

    async def _app_service(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            self._record("appservice", request, 401)
            return web.json_response({"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"},
                                     status=401)
        if request.query.get("api-version") != APP_SERVICE_API_VERSION:
            self._record("appservice", request, 400)
            return web.json_response(
                {"statusCode": 400, "message": f"api-version must be {APP_SERVICE_API_VERSION}"}, status=400
            )
        problem = self._check(request)
        if problem is not None:
            status, message = problem
            self._record("appservice", request, status)
            return web.json_response({"statusCode": status, "message": message}, status=status)
        self._record("appservice", request, 200)
        return web.json_response(self._token_body(request, imds=False))

    async def _imds(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata", "").lower() != "true":
            self._record("imds", request, 400)
            return web.json_response(
                {"error": "invalid_request", "error_description": "Required metadata header not specified"},
                status=400,
            )
        if not request.query.get("api-version"):
            self._record("imds", request, 400)
            return web.json_response(
                {"error": "invalid_request", "error_description": "api-version is required"}, status=400
            )
        problem = self._check(request)
        if problem is not None:
            status, message = problem
            self._record("imds", request, status)
            return web.json_response({"error": "invalid_request", "error_description": message}, status=status)
        self._record("imds", request, 200)
        return web.json_response(self._token_body(request, imds=True))

    async def _entra(self, request: web.Request) -> web.Response:
        form = await request.post()
        client_id = str(form.get("client_id", ""))
        scope = str(form.get("scope", ""))
        entry = TokenRequest(style="entra", resource=scope, api_version=None, client_id=client_id or None,
                             other_params={"tenant": request.match_info["tenant"],
                                           "grant_type": str(form.get("grant_type", ""))})

        def refuse(code: str, description: str) -> web.Response:
            with self.lock:
                self._requests.append(replace(entry, status=400 if code != "invalid_client" else 401))
            return web.json_response({"error": code, "error_description": description},
                                     status=400 if code != "invalid_client" else 401)

        with self.lock:
            if self._fail_left > 0:
                self._fail_left -= 1
                status = self._fail_status
                self._requests.append(replace(entry, status=status))
                body = {"error": "temporarily_unavailable"}
                if self.echo_credentials:
                    sent = form.get("client_secret") or form.get("client_assertion")
                    body["error_description"] = f"AADSTS50001: the service failed; the request carried {sent}"
                return web.json_response(body, status=status)
        if form.get("grant_type") != "client_credentials" or not client_id or not scope:
            return refuse("invalid_request", "AADSTS900144: grant_type, client_id and scope are required")
        assertion, secret = form.get("client_assertion"), form.get("client_secret")
        if assertion is not None and client_id in self.certificate_clients:
            if not _is_certificate_assertion(str(assertion)):
                return refuse("invalid_client", "AADSTS700027: the client assertion is not a signed JWT")
        elif assertion is not None:
            if assertion != self.federated_token:
                return refuse("invalid_client", "AADSTS700211: No matching federated identity record found")
        elif secret is not None:
            if self.client_secrets.get(client_id) != secret:
                quoted = f" (the secret sent was {secret})" if self.echo_credentials else ""
                return refuse("invalid_client", f"AADSTS7000215: Invalid client secret provided{quoted}")
        else:
            return refuse("invalid_client", "AADSTS7000216: client_assertion or client_secret is required")
        with self.lock:
            self._requests.append(entry)
        return web.json_response({
            "token_type": "Bearer",
            "expires_in": self.lifetime,
            "ext_expires_in": self.lifetime,
            "access_token": self.tokens.issue(client_id),
        })


def _is_certificate_assertion(assertion: str) -> bool:
    """A JWT whose header names the signing certificate (`x5t` or `x5t#S256`), as MSAL sends it."""
    import base64
    import json

    parts = assertion.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        return False
    return isinstance(header, dict) and bool(header.get("x5t") or header.get("x5t#S256"))
