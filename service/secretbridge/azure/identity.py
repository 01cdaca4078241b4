"""Which Azure identity a store uses, built from component metadata.

Shared by the `keyvault` backend and the `containerapps` backend's Key Vault references. The
metadata names are those of Dapr's built-in Azure components (`azureClientId`, `azureTenantId`,
`azureClientSecret`, ... and their `spn*` aliases), so a YAML written for
`secretstores.azure.keyvault` keeps working.

How `azureAuthMethod: auto` (the default) picks, first match wins:

1. `azureClientSecret` or `azureCertificateFile` in the metadata: that service principal. An
   explicit secret in the component says what the author wants (and Dapr's built-in does the same).
2. `AZURE_FEDERATED_TOKEN_FILE` in the environment: workload identity (AKS).
3. A managed-identity endpoint advertised in the environment (`IDENTITY_ENDPOINT`, `MSI_ENDPOINT`,
   `AZURE_POD_IDENTITY_AUTHORITY_HOST`): managed identity, user-assigned when `azureClientId` is set.
4. `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH` in the environment: that service principal.
5. Otherwise managed identity through IMDS (VMs and AKS nodes advertise nothing in the environment).

Everything here is careful about secrets: messages name the identity by kind and client id (not
secret), and `safe_cause` scrubs tokens, `IDENTITY_HEADER` and configured secrets from any
exception text before it reaches a message or a log.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ClientAuthenticationError

from secretbridge.azure.causes import CauseAwareRetryPolicy, describe_cause
from secretbridge.azure.hosts import AUTHORITY_HOSTS, AzureEnvironment, check_environment, parse_environment
from secretbridge.azure.redaction import remember, safe_cause, scrub_azure_logs
from secretbridge.core.errors import FailedPrecondition, InvalidArgument
from secretbridge.core.metadata import ParsedMetadata, Property


class AuthMethod(StrEnum):
    """The values of `azureAuthMethod`."""

    AUTO = "auto"
    MANAGED_IDENTITY = "managedidentity"
    WORKLOAD_IDENTITY = "workloadidentity"
    CLIENT_SECRET = "clientsecret"
    CLIENT_CERTIFICATE = "clientcertificate"
    ENVIRONMENT = "environment"


AZURE_PROPERTIES: tuple[Property, ...] = (
    Property(
        "azureClientId",
        "The client id of the user-assigned managed identity to use (leave unset for the system-assigned "
        "one), or of the service principal / workload identity.",
        aliases=("spnClientId", "clientId"),
    ),
    Property(
        "azureTenantId",
        "The Microsoft Entra tenant of the service principal or workload identity (managed identities "
        "do not need it).",
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
        "azureCertificateFile",
        "The path of a service principal's certificate (PEM or PKCS#12), for development.",
        aliases=("spnCertificateFile",),
    ),
    Property(
        "azureCertificatePassword",
        "The password of `azureCertificateFile`, when it has one.",
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
        "azureAuthMethod",
        "Which identity to use; `auto` picks a service principal given in the metadata, else workload "
        "identity, else managed identity (see docs/keyvault.md).",
        default=AuthMethod.AUTO.value,
        choices=tuple(m.value for m in AuthMethod),
    ),
)

#: Environment variables that make a managed-identity endpoint known (IMDS needs none).
_MI_ENDPOINT_VARS = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST")


def environment_of(metadata: ParsedMetadata) -> AzureEnvironment:
    """The cloud the metadata names (public by default)."""
    text = metadata.get("azureEnvironment") or AzureEnvironment.PUBLIC.value
    return parse_environment(text)


def select_auth_method(metadata: ParsedMetadata, environ: Mapping[str, str] | None = None) -> AuthMethod:
    """The identity `build_credential` will use, resolving `auto` (see the module docstring)."""
    env = os.environ if environ is None else environ
    method = AuthMethod(metadata.get("azureAuthMethod") or AuthMethod.AUTO.value)
    if method is not AuthMethod.AUTO:
        return method
    if metadata.get("azureClientSecret"):
        return AuthMethod.CLIENT_SECRET
    if metadata.get("azureCertificateFile"):
        return AuthMethod.CLIENT_CERTIFICATE
    if env.get("AZURE_FEDERATED_TOKEN_FILE"):
        return AuthMethod.WORKLOAD_IDENTITY
    if any(env.get(name) for name in _MI_ENDPOINT_VARS):
        return AuthMethod.MANAGED_IDENTITY
    if env.get("AZURE_CLIENT_SECRET") or env.get("AZURE_CLIENT_CERTIFICATE_PATH"):
        return AuthMethod.ENVIRONMENT
    return AuthMethod.MANAGED_IDENTITY


def describe_identity(metadata: ParsedMetadata, environ: Mapping[str, str] | None = None) -> str:
    """The identity in words, for messages: "the user-assigned managed identity with client id …".

    Client ids and tenant ids are not secrets; nothing else from the credential is shown.
    """
    env = os.environ if environ is None else environ
    method = select_auth_method(metadata, env)
    client_id = metadata.get("azureClientId")
    if method is AuthMethod.MANAGED_IDENTITY:
        if client_id:
            return f"the user-assigned managed identity with client id {client_id}"
        return "the system-assigned managed identity"
    if method is AuthMethod.WORKLOAD_IDENTITY:
        shown = client_id or env.get("AZURE_CLIENT_ID") or "(unset)"
        return f"the workload identity with client id {shown}"
    if method is AuthMethod.CLIENT_SECRET:
        return f"the service principal with client id {client_id or '(unset)'} (client secret)"
    if method is AuthMethod.CLIENT_CERTIFICATE:
        return f"the service principal with client id {client_id or '(unset)'} (certificate)"
    return f"the service principal from the environment (AZURE_CLIENT_ID {env.get('AZURE_CLIENT_ID', '(unset)')})"


def tenant_id_problem(value: str) -> str | None:
    """Why `value` cannot be a tenant (a GUID or a domain such as contoso.onmicrosoft.com), or None.

    The Azure SDK refuses other characters with a bare ValueError; saying so here makes it an
    INVALID_ARGUMENT naming the property instead of an internal error."""
    if value and _TENANT_ID.fullmatch(value):
        return None
    return "must be a tenant id (a GUID) or a tenant domain name: letters, digits, '-' and '.' only"


_TENANT_ID = re.compile(r"[A-Za-z0-9.-]+")


def _need(metadata: ParsedMetadata, name: str, env: Mapping[str, str], env_name: str, method: AuthMethod) -> str:
    value = metadata.get(name) or env.get(env_name)
    if not value:
        raise InvalidArgument(
            f"metadata property '{name}' is required with azureAuthMethod '{method.value}' "
            f"(or set {env_name} in the environment)"
        )
    if name == "azureTenantId" and (problem := tenant_id_problem(str(value))) is not None:
        source = f"metadata property '{name}'" if metadata.get(name) else f"the environment's {env_name}"
        raise InvalidArgument(f"{source} {problem}")
    return str(value)


def build_credential(
    metadata: ParsedMetadata,
    *,
    environ: Mapping[str, str] | None = None,
    **client_kwargs: Any,
) -> AsyncTokenCredential:
    """An async credential for the identity the metadata selects.

    `client_kwargs` go to the credential's HTTP pipeline (e.g. `transport`, `retry_total`), so a
    token endpoint that is down fails within the caller's retry budget instead of the SDK's
    default (about 5 s for App Service, up to a minute for IMDS). Must be called on the event
    loop that will use the credential. Raises `InvalidArgument` for missing metadata and
    `FailedPrecondition` for an unreadable certificate file.
    """
    from azure.identity.aio import (
        CertificateCredential,
        ClientSecretCredential,
        EnvironmentCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    env = os.environ if environ is None else environ
    remember(metadata)
    scrub_azure_logs()
    method = select_auth_method(metadata, env)
    environment = environment_of(metadata)
    # A token endpoint that does not resolve or refuses: fail now, naming it (IMDS keeps its own).
    client_kwargs.setdefault("retry_policy_class", CauseAwareRetryPolicy)
    authority: dict[str, str] = {}
    if environment is not AzureEnvironment.PUBLIC:
        authority["authority"] = AUTHORITY_HOSTS[environment]
    credential: AsyncTokenCredential
    if method is AuthMethod.MANAGED_IDENTITY:
        client_id = metadata.get("azureClientId") or None
        credential = ManagedIdentityCredential(client_id=client_id, **client_kwargs)
    elif method is AuthMethod.WORKLOAD_IDENTITY:
        token_file = env.get("AZURE_FEDERATED_TOKEN_FILE")
        if not token_file:
            raise InvalidArgument(
                "azureAuthMethod 'workloadidentity' needs AZURE_FEDERATED_TOKEN_FILE in the environment "
                "(set by the AKS workload identity webhook)"
            )
        credential = WorkloadIdentityCredential(
            tenant_id=_need(metadata, "azureTenantId", env, "AZURE_TENANT_ID", method),
            client_id=_need(metadata, "azureClientId", env, "AZURE_CLIENT_ID", method),
            token_file_path=token_file,
            **authority,
            **client_kwargs,
        )
    elif method is AuthMethod.CLIENT_SECRET:
        credential = ClientSecretCredential(
            tenant_id=_need(metadata, "azureTenantId", env, "AZURE_TENANT_ID", method),
            client_id=_need(metadata, "azureClientId", env, "AZURE_CLIENT_ID", method),
            client_secret=_need(metadata, "azureClientSecret", env, "AZURE_CLIENT_SECRET", method),
            **authority,
            **client_kwargs,
        )
    elif method is AuthMethod.CLIENT_CERTIFICATE:
        path = _need(metadata, "azureCertificateFile", env, "AZURE_CLIENT_CERTIFICATE_PATH", method)
        try:
            credential = CertificateCredential(
                tenant_id=_need(metadata, "azureTenantId", env, "AZURE_TENANT_ID", method),
                client_id=_need(metadata, "azureClientId", env, "AZURE_CLIENT_ID", method),
                certificate_path=path,
                password=metadata.get("azureCertificatePassword") or None,
                **authority,
                **client_kwargs,
            )
        except (OSError, ValueError) as exc:
            raise FailedPrecondition(
                f"metadata property 'azureCertificateFile' names {path!r}, which cannot be used as a "
                f"certificate: {type(exc).__name__}"
            ) from None
    else:
        credential = EnvironmentCredential(**authority, **client_kwargs)
    return SingleFlightCredential(credential)


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
