"""Why a connection to a vault or a token endpoint failed, in words a user can act on.

azure-core wraps every aiohttp failure in `ServiceRequestError`; the cause is further down the
exception chain: `aiohttp.ClientConnectorDNSError` over a `socket.gaierror` (the host does not
resolve), `ClientConnectorError` over `ConnectionRefusedError` (nothing listens there),
`ClientConnectorCertificateError` over `ssl.SSLCertVerificationError` (the certificate is not
trusted by the trust store in use). `classify_cause` walks that chain and names the kind;
`describe_cause` says it as the messages do ("cannot resolve host …", "connection refused by …",
"TLS handshake with … failed: certificate not trusted (…)"). `secretbridge doctor`, the
runtime's error messages and readiness share these words.

Only exception classes, host names, ports and the resolver's or TLS library's reason are used:
never a request, a header or a body.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any

from azure.core.pipeline.policies import AsyncRetryPolicy


class Cause(StrEnum):
    """The kinds of failure the doctor and the runtime tell apart."""

    DNS = "dns"  # the host name does not resolve
    REFUSED = "refused"  # nothing accepts connections at that address
    TLS = "tls"  # the TLS handshake failed (an untrusted certificate, a name mismatch, ...)
    TIMEOUT = "timeout"  # no answer in time (a firewall dropping packets, a slow backend)
    UNREACHABLE = "unreachable"  # another network failure (no route, reset, proxy)
    TOKEN = "token"  # the token endpoint answered, but with no token (an unknown identity, ...)
    UNAUTHORIZED = "unauthorized"  # the vault refused the token (401: another tenant, ...)
    FORBIDDEN_RBAC = "forbidden-rbac"  # 403: no role assignment (the vault uses Azure RBAC)
    FORBIDDEN_ACCESS_POLICY = "forbidden-access-policy"  # 403: the vault's access policy lacks it
    NOT_FOUND = "not-found"
    DISABLED = "disabled"  # 403 SecretDisabled: the identity may read, the secret is switched off
    OTHER = "other"


#: Causes that do not heal within one call: retrying them only spends the caller's requestTimeout
#: and turns a clear UNAVAILABLE into DEADLINE_EXCEEDED. The cache serves stale values meanwhile
#: and probes for recovery.
PERMANENT_CAUSES = frozenset({Cause.DNS, Cause.REFUSED, Cause.TLS})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        # azure-core keeps the transport's exception as `inner_exception`, aiohttp the OS error
        # as `os_error` / `certificate_error`, besides the usual __cause__ / __context__.
        for name in ("inner_exception", "os_error", "certificate_error", "__cause__", "__context__"):
            linked = getattr(current, name, None)
            if isinstance(linked, BaseException):
                todo.append(linked)


def forbidden_kind(inner_code: str | None, message: str | None) -> Cause:
    """RBAC or access policy, from a 403's inner error: Key Vault answers `ForbiddenByRbac` for a
    vault using Azure RBAC, `AccessDenied` ("... does not have secrets get permission on key
    vault ...") for one using access policies."""
    if (inner_code or "").lower() == "accessdenied" or "does not have secrets" in (message or ""):
        return Cause.FORBIDDEN_ACCESS_POLICY
    return Cause.FORBIDDEN_RBAC


def _http_kind(exc: BaseException) -> Cause | None:
    from azure.core.exceptions import HttpResponseError

    if not isinstance(exc, HttpResponseError) or exc.status_code is None:
        return None
    if exc.status_code == 401:
        return Cause.UNAUTHORIZED
    if exc.status_code == 404:
        return Cause.NOT_FOUND
    if exc.status_code == 403:
        error = exc.error
        inner = error.innererror if error is not None else None
        code = inner.get("code") if isinstance(inner, dict) else None
        return forbidden_kind(str(code) if code else None, error.message if error is not None else None)
    return None


def _kind_of(exc: BaseException) -> Cause | None:
    name = type(exc).__name__
    if isinstance(exc, socket.gaierror) or name == "ClientConnectorDNSError":
        return Cause.DNS
    if isinstance(exc, ssl.SSLError | ssl.CertificateError) or name in (
        "ClientConnectorCertificateError", "ClientConnectorSSLError", "ClientSSLError",
    ):
        return Cause.TLS
    if isinstance(exc, ConnectionRefusedError):
        return Cause.REFUSED
    if isinstance(exc, TimeoutError) or name in ("ServiceRequestTimeoutError", "ServiceResponseTimeoutError",
                                                 "ConnectionTimeoutError", "ServerTimeoutError"):
        return Cause.TIMEOUT
    if isinstance(exc, OSError) or name in ("ClientConnectorError", "ServerDisconnectedError", "ClientOSError"):
        return Cause.UNREACHABLE
    return None


_BY_VALUE = {kind.value: kind for kind in Cause}
_ORDER = (Cause.DNS, Cause.TLS, Cause.REFUSED, Cause.TIMEOUT, Cause.UNREACHABLE)


def classify_cause(exc: BaseException | None) -> Cause:
    """The kind of an exception (or of a project error carrying `cause`), from its whole chain.

    For readiness and the doctor: `classify_cause(err) -> "dns" | "refused" | "tls" | "timeout" |
    "unreachable" | "other"`. The most specific cause found anywhere in the chain wins (a DNS
    failure is also an OSError).
    """
    if exc is None:
        return Cause.OTHER
    carried = getattr(exc, "cause", None)
    if isinstance(carried, str) and carried in _BY_VALUE:
        return _BY_VALUE[carried]
    found = {kind for kind in map(_kind_of, _chain(exc)) if kind is not None}
    return next((kind for kind in _ORDER if kind in found), None) or _http_kind(exc) or Cause.OTHER


def _address(exc: BaseException, fallback: str | None) -> str | None:
    for current in _chain(exc):
        host, port = getattr(current, "host", None), getattr(current, "port", None)
        if isinstance(host, str) and host:
            return f"{host}:{port}" if isinstance(port, int) else host
    return fallback


def _reason(exc: BaseException, kind: Cause) -> str:
    for current in _chain(exc):
        if kind is Cause.DNS and isinstance(current, socket.gaierror):
            return str(current.strerror or current)
        # aiohttp's certificate error is also an ssl.CertificateError, without the SSL fields.
        verify = getattr(current, "verify_message", None)
        if kind is Cause.TLS and verify:
            return str(verify)
        if kind is Cause.TLS and isinstance(current, ssl.SSLError) and getattr(current, "reason", None):
            return str(current.reason)
    return ""


def describe_cause(exc: BaseException, where: str | None = None) -> str | None:
    """The failure in words naming the host ("cannot resolve host kv.example (Name or service not
    known)"), or None when it is not one of DNS, refused or TLS. `where` names the address when
    the exception does not (a bare `socket.gaierror`)."""
    kind = classify_cause(exc)
    address = _address(exc, where) or "the server"
    reason = _reason(exc, kind)
    if kind is Cause.DNS:
        host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
        return f"cannot resolve host {host}" + (f" ({reason})" if reason else "")
    if kind is Cause.REFUSED:
        return f"connection refused by {address}"
    if kind is Cause.TLS:
        verify = any(isinstance(e, ssl.SSLCertVerificationError) or type(e).__name__ ==
                     "ClientConnectorCertificateError" for e in _chain(exc))
        what = "certificate not trusted" if verify else "TLS error"
        return f"TLS handshake with {address} failed: {what}" + (f" ({reason})" if reason else "")
    return None


def failing_status(status: int) -> bool:
    """An answer that says a vault (or a token endpoint) is failing, rather than deciding something."""
    return status >= 500 or status in (408, 429)


class CauseAwareRetryPolicy(AsyncRetryPolicy):
    """azure-core's retries, except for failures that do not heal within a call (`PERMANENT_CAUSES`).

    A host that does not resolve, refuses connections or presents an untrusted certificate fails
    the same way on every attempt; the SDK's backoff (0, 1.6, 3.2 s ...) would only spend the
    caller's requestTimeout, and the app would see DEADLINE_EXCEEDED instead of the cause. Used by
    the vault clients and (as `retry_policy_class`) the token endpoints' pipelines.

    `on_failure(cause)` hears of every failed attempt as it happens (a 5xx or 429 answer, a
    transport failure), the first one included: the token endpoints' pipelines report there
    (`azure.health`), so an identity endpoint that fails is known before the retries run out.
    `on_success()` hears of an answer in the 2xx range (a token was given).
    """

    def __init__(
        self, *, on_failure: Callable[[str], None] | None = None, on_success: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.on_failure = on_failure
        self.on_success = on_success

    async def send(self, request: Any) -> Any:
        response = await super().send(request)
        if self.on_success is not None and 200 <= response.http_response.status_code < 300:
            self.on_success()
        return response

    def increment(self, settings: Any, response: Any = None, error: Exception | None = None) -> bool:
        if self.on_failure is not None:
            if error is not None:
                self.on_failure(describe_cause(error) or f"the request failed ({classify_cause(error).value})")
            else:
                status = getattr(getattr(response, "http_response", None), "status_code", None)
                if isinstance(status, int) and failing_status(status):
                    self.on_failure(f"the endpoint answered {status}")
        if error is not None and classify_cause(error) in PERMANENT_CAUSES:
            return False
        return bool(super().increment(settings, response=response, error=error))


def cause_of_message(text: str | None) -> Cause:
    """The kind named in one of the project's messages (for readiness, which keeps the text)."""
    if not text:
        return Cause.OTHER
    checks = (
        ("cannot resolve host", Cause.DNS),
        ("connection refused by", Cause.REFUSED),
        ("TLS handshake with", Cause.TLS),
        ("did not answer", Cause.TIMEOUT),
        ("no answer within", Cause.TIMEOUT),
        ("could not get a token", Cause.TOKEN),
        ("the token endpoint refused", Cause.TOKEN),
        ("401 Unauthorized", Cause.UNAUTHORIZED),
        ("uses access policies", Cause.FORBIDDEN_ACCESS_POLICY),
        ("(403 ", Cause.FORBIDDEN_RBAC),
        ("was not found", Cause.NOT_FOUND),
    )
    return next((kind for words, kind in checks if words in text), Cause.OTHER)


def health_verdict(error: BaseException | str | None) -> tuple[str, Cause | None]:
    """The doctor's verdict on an instance's last backend error: ("ok", None) when there is none,
    else ("fail", its cause), from the exception (or its `cause`) or from the message text."""
    if error is None:
        return "ok", None
    if isinstance(error, str):
        return "fail", cause_of_message(error)
    kind = classify_cause(error)
    message = getattr(error, "message", None)
    if kind is Cause.OTHER and isinstance(message, str):
        kind = cause_of_message(message)
    return "fail", kind
