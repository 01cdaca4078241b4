"""Which Azure identity a store uses, built from component metadata, as Dapr's built-in Azure
components choose it (components-contrib `common/authentication/azure`).

Shared by the `keyvault` backend and the Key Vault references of the `containerapps` and `env`
backends. The metadata names are the built-in's (`azureClientId`, `azureTenantId`,
`azureClientSecret`, `azureCertificate`, ... and their `spn*` aliases), so a YAML written for
`secretstores.azure.keyvault` keeps its identity.

`azureAuthMethods` (aliases `azureADAuthMethods`, `entraIDAuthMethods`,
`microsoftEntraIDAuthMethods`) is an ordered, comma-separated list of `clientcredentials|creds`,
`clientcertificate|cert`, `workloadidentity|wi`, `managedidentity|mi`,
`commandlineinterface|cli`, or `none` (Azure authentication off). A listed method that is not
configured is skipped; the others are tried in order at token time, an unavailable one falling
through to the next. Without the property the built-in's order is used, each method only when
configured:

1. client credentials: `azureClientId`, `azureClientSecret` and `azureTenantId` all set;
2. client certificate: `azureCertificateFile` or inline `azureCertificate` (PEM, or base64
   PKCS#12), with `azureClientId` and `azureTenantId`;
3. workload identity: `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID` and `AZURE_TENANT_ID` in the
   environment (the client id comes from the environment, as in the built-in);
4. managed identity: user-assigned when `azureClientId` is set, else when `AZURE_CLIENT_ID` is
   set in the environment (the Azure SDK convention), else system-assigned;
5. the Azure CLI (`az login`), left out on a cloud service that advertises a managed identity
   (`IDENTITY_ENDPOINT`, `IMDS_ENDPOINT`, `MSI_ENDPOINT`), as the built-in does.

The chain is azure-identity's `ChainedTokenCredential` (which also makes an IMDS managed identity
probe for one second before it is relied on, as the built-in does). A credential that *refuses*
(a wrong client secret) stops the chain, and its own error is raised so callers can tell a
refusal from an outage.

The singular `azureAuthMethod` of earlier secretbridge releases still works, with a deprecation
warning: `auto` is the default chain, `clientsecret` / `clientcertificate` / `workloadidentity` /
`managedidentity` name one method, `environment` the service principal of `AZURE_CLIENT_SECRET` /
`AZURE_CLIENT_CERTIFICATE_PATH`.

Everything here is careful about secrets: messages name the identity by kind and client id (not
secret), and `safe_cause` scrubs tokens, `IDENTITY_HEADER` and configured secrets from any
exception text before it reaches a message or a log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError

from secretbridge.azure.causes import CauseAwareRetryPolicy, describe_cause
from secretbridge.azure.health import identity_health
from secretbridge.azure.hosts import AUTHORITY_HOSTS, AzureEnvironment, check_environment, parse_environment
from secretbridge.azure.redaction import remember, safe_cause, scrub_azure_logs
from secretbridge.core.errors import FailedPrecondition, InvalidArgument
from secretbridge.core.metadata import Kind, ParsedMetadata, Property


class AuthMethod(StrEnum):
    """The methods `azureAuthMethods` can list (the built-in's long names)."""

    CLIENT_CREDENTIALS = "clientcredentials"
    CLIENT_CERTIFICATE = "clientcertificate"
    WORKLOAD_IDENTITY = "workloadidentity"
    MANAGED_IDENTITY = "managedidentity"
    CLI = "commandlineinterface"
    #: Only through the deprecated `azureAuthMethod: environment`: the service principal in AZURE_*.
    ENVIRONMENT = "environment"


#: Every spelling `azureAuthMethods` accepts, as the built-in: long names and short forms.
METHOD_NAMES: dict[str, AuthMethod] = {
    "clientcredentials": AuthMethod.CLIENT_CREDENTIALS,
    "creds": AuthMethod.CLIENT_CREDENTIALS,
    "clientcertificate": AuthMethod.CLIENT_CERTIFICATE,
    "cert": AuthMethod.CLIENT_CERTIFICATE,
    "workloadidentity": AuthMethod.WORKLOAD_IDENTITY,
    "wi": AuthMethod.WORKLOAD_IDENTITY,
    "managedidentity": AuthMethod.MANAGED_IDENTITY,
    "mi": AuthMethod.MANAGED_IDENTITY,
    "commandlineinterface": AuthMethod.CLI,
    "cli": AuthMethod.CLI,
}
NONE = "none"
_SPIFFE = ("spiffeworkloadidentity", "spiffe")

#: The order without `azureAuthMethods`, as the built-in's GetTokenCredential.
DEFAULT_ORDER: tuple[AuthMethod, ...] = (
    AuthMethod.CLIENT_CREDENTIALS,
    AuthMethod.CLIENT_CERTIFICATE,
    AuthMethod.WORKLOAD_IDENTITY,
    AuthMethod.MANAGED_IDENTITY,
    AuthMethod.CLI,
)

#: The deprecated singular `azureAuthMethod` and what it meant.
_LEGACY: dict[str, AuthMethod | None] = {
    "auto": None,
    "managedidentity": AuthMethod.MANAGED_IDENTITY,
    "workloadidentity": AuthMethod.WORKLOAD_IDENTITY,
    "clientsecret": AuthMethod.CLIENT_CREDENTIALS,
    "clientcertificate": AuthMethod.CLIENT_CERTIFICATE,
    "environment": AuthMethod.ENVIRONMENT,
}


def _check_methods(methods: tuple[str, ...]) -> str | None:
    for item in methods:
        lowered = item.lower()
        if lowered in _SPIFFE:
            return (
                f"lists {item!r}: SPIFFE workload identity is not supported by secretbridge; use "
                "workloadidentity (AKS) or managedidentity"
            )
        if lowered not in METHOD_NAMES and lowered != NONE:
            return (
                f"lists {item!r}, which is not a method; use clientcredentials|creds, clientcertificate|cert, "
                "workloadidentity|wi, managedidentity|mi, commandlineinterface|cli or none"
            )
    return None


AZURE_PROPERTIES: tuple[Property, ...] = (
    Property(
        "azureClientId",
        "The client id of the user-assigned managed identity to use (unset: `AZURE_CLIENT_ID` from the "
        "environment, else the system-assigned one), or of the service principal.",
        aliases=("spnClientId", "clientId"),
    ),
    Property(
        "azureTenantId",
        "The Microsoft Entra tenant of the service principal (managed identities do not need it).",
        aliases=("spnTenantId", "tenantId"),
        check=lambda v: tenant_id_problem(v),
    ),
    Property(
        "azureClientSecret",
        "A service principal's client secret, for development; prefer a managed identity in Azure.",
        aliases=("spnClientSecret", "clientSecret"),
        sensitive=True,
    ),
    Property(
        "azureCertificate",
        "A service principal's certificate inline: PEM text (certificate and private key), or a "
        "PKCS#12 (PFX) file in base64. `azureCertificateFile` wins when both are set.",
        aliases=("spnCertificate",),
        sensitive=True,
    ),
    Property(
        "azureCertificateFile",
        "The path of a service principal's certificate (PEM or PKCS#12), for development.",
        aliases=("spnCertificateFile",),
    ),
    Property(
        "azureCertificatePassword",
        "The password of the PKCS#12 certificate (`azureCertificateFile` or `azureCertificate`).",
        aliases=("spnCertificatePassword",),
        sensitive=True,
    ),
    Property(
        "azureEnvironment",
        "The Azure cloud: AzurePublicCloud, AzureChinaCloud or AzureUSGovernmentCloud (the short "
        "forms AzurePublic, AzureChina, AzureUSGovernment are accepted).",
        default=AzureEnvironment.PUBLIC.value,
        aliases=("azureCloud",),
        check=check_environment,
    ),
    Property(
        "azureAuthMethods",
        "The identities to try, in order, comma-separated: clientcredentials|creds, "
        "clientcertificate|cert, workloadidentity|wi, managedidentity|mi, commandlineinterface|cli; "
        "`none` turns Azure authentication off. A listed method that is not configured is skipped. "
        "Unset: the built-in store's order (see docs/keyvault.md).",
        Kind.LIST,
        default=(),
        aliases=("azureADAuthMethods", "entraIDAuthMethods", "microsoftEntraIDAuthMethods"),
        check=_check_methods,
    ),
    Property(
        "azureAuthMethod",
        "Deprecated: one method (`auto`, `managedidentity`, `workloadidentity`, `clientsecret`, "
        "`clientcertificate`, `environment`); use azureAuthMethods.",
        choices=tuple(_LEGACY),
        deprecated="use azureAuthMethods (the built-in store's ordered list, e.g. \"managedidentity\" or "
        "\"mi\"); azureAuthMethods wins when both are set",
    ),
)

#: Environment variables that say a cloud service offers a managed identity (the built-in then
#: leaves the Azure CLI out of its default chain).
_CLOUD_SERVICE_VARS = ("IDENTITY_ENDPOINT", "IMDS_ENDPOINT", "MSI_ENDPOINT")
_WORKLOAD_VARS = ("AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID")


def environment_of(metadata: ParsedMetadata) -> AzureEnvironment:
    """The cloud the metadata names (public by default)."""
    text = metadata.get("azureEnvironment") or AzureEnvironment.PUBLIC.value
    return parse_environment(text)


@dataclass(frozen=True)
class Candidate:
    """One method of the chain: whether it is configured, why not, and the identity in words."""

    method: AuthMethod
    configured: bool
    why_not: str
    words: str


@dataclass(frozen=True)
class IdentityPlan:
    """The methods the metadata asks for, in order, each configured or not."""

    candidates: tuple[Candidate, ...]
    #: True when `azureAuthMethods` (or the deprecated `azureAuthMethod`) named the methods.
    explicit: bool
    #: True when `azureAuthMethods` says `none`.
    disabled: bool = False
    #: True when the methods come from `azureAuthMethods` (not the deprecated `azureAuthMethod`).
    listed: bool = False

    @property
    def usable(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.configured)

    def skipped(self) -> str:
        """The listed methods that are not configured, and why: for messages."""
        return "; ".join(f"{c.method.value}: {c.why_not}" for c in self.candidates if not c.configured)


def requested_methods(metadata: ParsedMetadata) -> tuple[tuple[AuthMethod, ...], bool, bool]:
    """(methods in order, explicit, disabled) from azureAuthMethods or the deprecated azureAuthMethod."""
    listed: tuple[str, ...] = tuple(metadata.get("azureAuthMethods") or ())
    if listed:
        lowered = [item.lower() for item in listed]
        if NONE in lowered:
            return (), True, True
        methods: list[AuthMethod] = []
        for item in lowered:
            method = METHOD_NAMES[item]
            if method not in methods:
                methods.append(method)
        return tuple(methods), True, False
    legacy = _LEGACY.get(str(metadata.get("azureAuthMethod") or "auto").lower())
    if legacy is not None:
        return (legacy,), True, False
    return DEFAULT_ORDER, False, False


def _missing(metadata: ParsedMetadata, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if not metadata.get(name)]


def _managed_client_id(metadata: ParsedMetadata, env: Mapping[str, str]) -> tuple[str | None, str]:
    """The user-assigned identity's client id (None: system-assigned) and where it came from."""
    if metadata.get("azureClientId"):
        return str(metadata["azureClientId"]), "azureClientId"
    if env.get("AZURE_CLIENT_ID"):
        return env["AZURE_CLIENT_ID"], "AZURE_CLIENT_ID"
    return None, ""


def _candidate(method: AuthMethod, metadata: ParsedMetadata, env: Mapping[str, str]) -> Candidate:
    client_id = metadata.get("azureClientId")
    if method is AuthMethod.CLIENT_CREDENTIALS:
        missing = _missing(metadata, ("azureClientId", "azureClientSecret", "azureTenantId"))
        return Candidate(method, not missing, f"{', '.join(missing)} not set",
                         f"the service principal with client id {client_id or '(unset)'} (client secret)")
    if method is AuthMethod.CLIENT_CERTIFICATE:
        missing = _missing(metadata, ("azureClientId", "azureTenantId"))
        if not (metadata.get("azureCertificateFile") or metadata.get("azureCertificate")):
            missing.insert(0, "azureCertificateFile or azureCertificate")
        return Candidate(method, not missing, f"{', '.join(missing)} not set",
                         f"the service principal with client id {client_id or '(unset)'} (certificate)")
    if method is AuthMethod.WORKLOAD_IDENTITY:
        missing = [name for name in _WORKLOAD_VARS if not env.get(name)]
        return Candidate(method, not missing, f"{', '.join(missing)} not set in the environment",
                         f"the workload identity with client id {env.get('AZURE_CLIENT_ID') or '(unset)'}")
    if method is AuthMethod.MANAGED_IDENTITY:
        managed, source = _managed_client_id(metadata, env)
        if managed is None:
            words = "the system-assigned managed identity"
        elif source == "azureClientId":
            words = f"the user-assigned managed identity with client id {managed}"
        else:
            words = f"the user-assigned managed identity with client id {managed} (from {source})"
        return Candidate(method, True, "", words)
    if method is AuthMethod.CLI:
        return Candidate(method, True, "", "the account signed in to the Azure CLI (az login)")
    configured = bool(env.get("AZURE_CLIENT_SECRET") or env.get("AZURE_CLIENT_CERTIFICATE_PATH"))
    return Candidate(method, configured, "AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH not set",
                     "the service principal from the environment "
                     f"(AZURE_CLIENT_ID {env.get('AZURE_CLIENT_ID', '(unset)')})")


def plan_identity(metadata: ParsedMetadata, environ: Mapping[str, str] | None = None) -> IdentityPlan:
    """Which methods will be tried, in order, and which of them are configured."""
    env = os.environ if environ is None else environ
    methods, explicit, disabled = requested_methods(metadata)
    if not explicit and any(env.get(name) for name in _CLOUD_SERVICE_VARS):
        methods = tuple(m for m in methods if m is not AuthMethod.CLI)
    candidates = tuple(_candidate(method, metadata, env) for method in methods)
    if not explicit:
        # The default chain holds only what is configured (as the built-in builds it).
        candidates = tuple(c for c in candidates if c.configured)
    return IdentityPlan(candidates, explicit, disabled, listed=bool(metadata.get("azureAuthMethods")))


def select_auth_method(metadata: ParsedMetadata, environ: Mapping[str, str] | None = None) -> AuthMethod:
    """The first method `build_credential` will try (raises like it when none is usable)."""
    return _usable(plan_identity(metadata, environ))[0].method


def describe_identity(metadata: ParsedMetadata, environ: Mapping[str, str] | None = None) -> str:
    """The identity in words, for messages: "the user-assigned managed identity with client id …".

    A chain of several is named as such, in order. Client ids and tenant ids are not secrets;
    nothing else from the credential is shown.
    """
    plan = plan_identity(metadata, environ)
    if plan.disabled:
        return "no identity (azureAuthMethods is none)"
    usable = plan.usable
    if not usable:
        return "no identity (no method in azureAuthMethods is configured)"
    words = usable[0].words if len(usable) == 1 else "the first that answers of " + ", then ".join(
        c.words for c in usable
    )
    if plan.explicit and plan.skipped():
        words += f" (azureAuthMethods skipped {plan.skipped()})"
    return words


def tenant_id_problem(value: str) -> str | None:
    """Why `value` cannot be a tenant (a GUID or a domain such as contoso.onmicrosoft.com), or None.

    The Azure SDK refuses other characters with a bare ValueError; saying so here makes it an
    INVALID_ARGUMENT naming the property instead of an internal error."""
    if value and _TENANT_ID.fullmatch(value):
        return None
    return "must be a tenant id (a GUID) or a tenant domain name: letters, digits, '-' and '.' only"


_TENANT_ID = re.compile(r"[A-Za-z0-9.-]+")


def refuse_disabled_identity(metadata: ParsedMetadata) -> None:
    """Raise `InvalidArgument` when `azureAuthMethods` says `none` (offline: needs no environment)."""
    if requested_methods(metadata)[2]:
        raise InvalidArgument(
            "metadata property 'azureAuthMethods' is 'none': Azure authentication is turned off, so "
            "Key Vault cannot be read"
        )


def _usable(plan: IdentityPlan) -> tuple[Candidate, ...]:
    if plan.disabled:
        raise InvalidArgument(
            "metadata property 'azureAuthMethods' is 'none': Azure authentication is turned off, so "
            "Key Vault cannot be read"
        )
    usable = plan.usable
    if not usable:
        named = "azureAuthMethods" if plan.listed else "azureAuthMethod"
        raise InvalidArgument(f"no method in metadata property '{named}' is configured: " + plan.skipped())
    return usable


def _certificate_data(metadata: ParsedMetadata) -> bytes:
    """Inline `azureCertificate` as bytes: PEM text as it is, otherwise base64 PKCS#12."""
    text = str(metadata["azureCertificate"]).strip()
    if "-----BEGIN" in text:
        return text.encode()
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(
            "metadata property 'azureCertificate' must be PEM text (certificate and private key) or a "
            "PKCS#12 (PFX) file in base64"
        ) from None


def _make(
    candidate: Candidate,
    metadata: ParsedMetadata,
    env: Mapping[str, str],
    authority: dict[str, str],
    client_kwargs: dict[str, Any],
) -> AsyncTokenCredential:
    from azure.identity.aio import (
        AzureCliCredential,
        CertificateCredential,
        ClientSecretCredential,
        EnvironmentCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    method = candidate.method
    if method is AuthMethod.MANAGED_IDENTITY:
        client_id, _ = _managed_client_id(metadata, env)
        return ManagedIdentityCredential(client_id=client_id, **client_kwargs)
    if method is AuthMethod.WORKLOAD_IDENTITY:
        if (problem := tenant_id_problem(env["AZURE_TENANT_ID"])) is not None:
            raise InvalidArgument(f"the environment's AZURE_TENANT_ID {problem}")
        return WorkloadIdentityCredential(
            tenant_id=env["AZURE_TENANT_ID"],
            client_id=env["AZURE_CLIENT_ID"],
            token_file_path=env["AZURE_FEDERATED_TOKEN_FILE"],
            **authority,
            **client_kwargs,
        )
    if method is AuthMethod.CLIENT_CREDENTIALS:
        return ClientSecretCredential(
            tenant_id=str(metadata["azureTenantId"]),
            client_id=str(metadata["azureClientId"]),
            client_secret=str(metadata["azureClientSecret"]),
            **authority,
            **client_kwargs,
        )
    if method is AuthMethod.CLIENT_CERTIFICATE:
        path = metadata.get("azureCertificateFile")
        source: dict[str, Any] = (
            {"certificate_path": path} if path else {"certificate_data": _certificate_data(metadata)}
        )
        field = "azureCertificateFile" if path else "azureCertificate"
        try:
            return CertificateCredential(
                tenant_id=str(metadata["azureTenantId"]),
                client_id=str(metadata["azureClientId"]),
                password=metadata.get("azureCertificatePassword") or None,
                **source,
                **authority,
                **client_kwargs,
            )
        except (OSError, ValueError) as exc:
            shown = f"names {path!r}, which" if path else "holds a certificate that"
            raise FailedPrecondition(
                f"metadata property '{field}' {shown} cannot be used as a certificate (with its private key "
                f"and azureCertificatePassword): {type(exc).__name__}"
            ) from None
    if method is AuthMethod.CLI:
        # The CLI runs `az account get-access-token` in a subprocess: no HTTP pipeline to configure.
        return AzureCliCredential()
    return EnvironmentCredential(**authority, **client_kwargs)


def build_credential(
    metadata: ParsedMetadata,
    *,
    environ: Mapping[str, str] | None = None,
    **client_kwargs: Any,
) -> AsyncTokenCredential:
    """An async credential for the identity (or chain of identities) the metadata selects.

    `client_kwargs` go to the credentials' HTTP pipelines (e.g. `transport`, `retry_total`), so a
    token endpoint that is down fails within the caller's retry budget instead of the SDK's
    default (about 5 s for App Service, up to a minute for IMDS). Must be called on the event
    loop that will use the credential. Raises `InvalidArgument` when no listed method is
    configured (naming each and why) and `FailedPrecondition` for an unusable certificate.
    """
    env = os.environ if environ is None else environ
    remember(metadata)
    scrub_azure_logs()
    usable = _usable(plan_identity(metadata, env))
    environment = environment_of(metadata)
    # A token endpoint that does not resolve or refuses: fail now, naming it (IMDS keeps its own).
    # Every failed token attempt marks the identity failing at once (azure/health.py), for every
    # instance that uses it, so reads with a value held stop waiting on it.
    mark = identity_health(describe_identity(metadata, env))
    client_kwargs.setdefault(
        "retry_policy_class",
        functools.partial(CauseAwareRetryPolicy, on_failure=mark.endpoint_failed, on_success=mark.endpoint_answered),
    )
    authority: dict[str, str] = {}
    if environment is not AzureEnvironment.PUBLIC:
        authority["authority"] = AUTHORITY_HOSTS[environment]
    # Nothing is opened by building a credential, so one failing leaves nothing to close.
    made = [(c.method, _make(c, metadata, env, authority, dict(client_kwargs))) for c in usable]
    inner = made[0][1] if len(made) == 1 else FallThroughChain(made)
    return SingleFlightCredential(inner)


#: What each chain member said during this token request: (method, error, refused).
_ATTEMPTS: contextvars.ContextVar[list[tuple[str, BaseException, bool]] | None] = contextvars.ContextVar(
    "identity_attempts", default=None
)


def _first_sentence(exc: BaseException, limit: int = 90) -> str:
    text = " ".join(str(exc).split())
    cut = text.find(". ")
    text = text[: cut + 1] if cut > 0 else text
    return text if len(text) <= limit else text[:limit] + "…"


class _Member(AsyncTokenCredential):
    """A chain member that notes what it said, so the chain can report each method by name."""

    def __init__(self, method: AuthMethod, inner: AsyncTokenCredential) -> None:
        self.method = method
        self.inner = inner

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.identity import CredentialUnavailableError

        try:
            return await self.inner.get_token(*scopes, **kwargs)
        except Exception as exc:
            noted = _ATTEMPTS.get()
            if noted is not None:
                noted.append((self.method.value, exc, not isinstance(exc, CredentialUnavailableError)))
            raise

    async def close(self) -> None:
        await self.inner.close()

    async def __aexit__(self, *args: object) -> None:
        await self.close()


class FallThroughChain(AsyncTokenCredential):
    """azure-identity's `ChainedTokenCredential`: an unavailable credential falls through to the
    next. When one refuses, its own error (with its status) is raised instead of the chain's
    summary, so a wrong secret reads as a refusal, not as an outage; when every one is
    unavailable, the error names each method and why, briefly."""

    def __init__(self, credentials: list[tuple[AuthMethod, AsyncTokenCredential]]) -> None:
        from azure.identity.aio import ChainedTokenCredential

        self._chain = ChainedTokenCredential(*(_Member(method, c) for method, c in credentials))

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.identity import CredentialUnavailableError

        noted: list[tuple[str, BaseException, bool]] = []
        reset = _ATTEMPTS.set(noted)
        try:
            return await self._chain.get_token(*scopes, **kwargs)
        except ClientAuthenticationError:
            refusal = next((exc for _, exc, refused in noted if refused), None)
            if refusal is not None:
                raise refusal from None
            tried = "; ".join(f"{method}: {_first_sentence(exc)}" for method, exc, _ in noted)
            raise CredentialUnavailableError(message=f"no method answered ({tried})") from None
        finally:
            _ATTEMPTS.reset(reset)

    async def close(self) -> None:
        await self._chain.close()

    async def __aexit__(self, *args: object) -> None:
        await self.close()


class TokenRequestError(ClientAuthenticationError):
    """The token endpoint could not be reached or failed (raised in place of transport errors).

    As a `ClientAuthenticationError` it stops azure-core's retry policy of the *vault* client
    from retrying on top of the credential's own retries, and it tells callers the failure came
    from the identity, not from the vault. The original error is `__cause__`.
    """

    def __init__(self, message: str, *, cause_class: str) -> None:
        super().__init__(message=message)
        self.cause_class = cause_class


class SingleFlightCredential(AsyncTokenCredential):
    """Wraps a credential so concurrent requests for the same token share one token request.

    The async azure-identity credentials cache tokens, but N concurrent cold calls each miss the
    cache and each call the token endpoint (a BulkGet at start-up would fire `bulkConcurrency`
    managed-identity requests; IMDS throttles that). Waiters are shielded: one caller giving up
    does not cancel the request the others wait on.
    """

    def __init__(self, inner: AsyncTokenCredential) -> None:
        self.inner = inner
        self._pending: dict[tuple[Any, ...], asyncio.Task[Any]] = {}

    async def _shared(self, key: tuple[Any, ...], make: Any) -> Any:
        try:
            hash(key)
        except TypeError:  # unusual keyword arguments: no sharing, just the call
            return await self._guarded(make)
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._guarded(make))
            self._pending[key] = task
            task.add_done_callback(lambda _t: self._pending.pop(key, None))
        return await asyncio.shield(task)

    @staticmethod
    async def _guarded(make: Any) -> Any:
        try:
            return await make()
        except ClientAuthenticationError:
            raise
        except AzureError as exc:
            # "connection refused by 127.0.0.1:8080", not "ServiceRequestError: Cannot connect ...".
            described = describe_cause(exc)
            message = f"{described} (the token endpoint)" if described else safe_cause(exc)
            raise TokenRequestError(message, cause_class=type(exc).__name__) from exc

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """As `AsyncTokenCredential.get_token`, sharing concurrent identical requests."""
        key = ("token", scopes, claims, tenant_id, enable_cae, tuple(sorted(kwargs.items())))
        result: AccessToken = await self._shared(
            key,
            lambda: self.inner.get_token(
                *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
            ),
        )
        return result

    async def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        """As `AsyncSupportsTokenInfo.get_token_info`, sharing concurrent identical requests."""
        inner_info = getattr(self.inner, "get_token_info", None)
        if inner_info is None:
            opts: dict[str, Any] = dict(options or {})
            token = await self.get_token(*scopes, **opts)
            return AccessTokenInfo(token.token, token.expires_on)
        key = ("info", scopes, tuple(sorted((options or {}).items())))
        result: AccessTokenInfo = await self._shared(key, lambda: inner_info(*scopes, options=options))
        return result

    async def close(self) -> None:
        """Close the wrapped credential (its HTTP pipeline)."""
        for task in list(self._pending.values()):
            task.cancel()
        await self.inner.close()

    async def __aenter__(self) -> SingleFlightCredential:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()
