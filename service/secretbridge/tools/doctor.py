"""`secretbridge doctor`: walk the path a secret takes, step by step, and say what to fix.

For each secretbridge Component in the resources: its metadata (as `check` validates it); for Key
Vault, which credential would be used and why, whether a Key Vault token can be had (the
principal's object id is printed; the token never is), the vault host's DNS answer, TCP and TLS,
then listing and reading one secret (for a certificate's secret, also its public certificate and key,
which need roles of their own: warnings, since only `objectType` requests read them); for the Container
Apps volume, its layout, how many secrets and whether each Key Vault reference resolves. With
`--socket`, a running server: the folder and the socket as daprd's user sees them, reflection, and
whether each Component's instance was initialised.

Every step is a `Step` (component, step, verdict ok/warn/fail, detail, fix). Nothing here prints a
secret value, a token or an identity header: details are built from names, addresses and error
kinds, and pass through `redact` as a last guard. Importing this module starts nothing; the
Azure SDK and gRPC are imported when a step needs them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import socket
import ssl
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from secretbridge import backends as stores
from secretbridge.azure.hosts import operator_vault_hosts
from secretbridge.core.errors import SecretStoreError
from secretbridge.core.metadata import ParsedMetadata
from secretbridge.core.names import show_name
from secretbridge.core.policy import OperatorPolicy

OK, WARN, FAIL = "ok", "warn", "fail"
#: daprd's user and group in its images (distroless nonroot).
DAPRD_UID = DAPRD_GID = 65532
#: The instance metadata service; `SECRETBRIDGE_IMDS_ADDRESS` (host:port) points the doctor elsewhere.
IMDS_ENV = "SECRETBRIDGE_IMDS_ADDRESS"
DEFAULT_IMDS_ADDRESS = "169.254.169.254:80"
_SOCKET = "(socket)"
_MI_ENDPOINT_VARS = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST")
#: Variables that steer the credential: shown with their value, or only as "set" when secret.
_SHOWN_VARS = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_CLIENT_ID",
               "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_CERTIFICATE_PATH")
_SET_ONLY_VARS = ("IDENTITY_HEADER", "MSI_SECRET", "AZURE_CLIENT_SECRET")

Resolver = Callable[..., Sequence[tuple[Any, ...]]]


@dataclass
class Step:
    """One checked step: `verdict` is ok, warn or fail; `fix` says what to do when it is not ok."""

    component: str
    step: str
    verdict: str
    detail: str
    fix: str = ""


@dataclass
class DoctorOptions:
    """What to diagnose, and the seams tests use (the IMDS address, the resolver, daprd's ids)."""

    resources: list[Path] = field(default_factory=list)
    socket: Path | None = None
    secret: str | None = None
    name: str = "secretbridge"
    timeout: float = 5.0
    imds_address: str | None = None  # host:port; default $SECRETBRIDGE_IMDS_ADDRESS, else 169.254.169.254:80
    resolver: Resolver | None = None  # default socket.getaddrinfo
    daprd_uid: int = DAPRD_UID
    daprd_gid: int = DAPRD_GID
    #: What the operator allows `serve` (vault hosts outside Azure); default: $SECRETBRIDGE_ALLOW_VAULT_HOSTS.
    policy: OperatorPolicy = field(default_factory=lambda: OperatorPolicy(vault_hosts=operator_vault_hosts()))

    def imds(self) -> tuple[str, int]:
        text = self.imds_address or os.environ.get(IMDS_ENV) or DEFAULT_IMDS_ADDRESS
        host, _, port = text.rpartition(":")
        return (host or text), int(port or 80)

    def resolve(self, host: str, port: int) -> Sequence[tuple[Any, ...]]:
        resolver = self.resolver or socket.getaddrinfo
        return resolver(host, port, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME)


class _Report:
    """The steps of one Component, each detail and fix scrubbed before it is kept."""

    def __init__(self, component: str, metadata: ParsedMetadata | None = None) -> None:
        self.component = component
        self.metadata = metadata
        self.steps: list[Step] = []

    def add(self, step: str, verdict: str, detail: str, fix: str = "") -> bool:
        from secretbridge.azure.redaction import redact

        # One line each: library messages may span several.
        self.steps.append(Step(self.component, step, verdict, redact(" ".join(detail.split()), self.metadata),
                               redact(" ".join(fix.split()), self.metadata)))
        return verdict != FAIL


# ---------------------------------------------------------------------------------------------
# Credential and token


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT access token (its base64url payload); {} when it is not a JWT.

    No signature is checked: the doctor only reads who the token names (`oid`, `tid`, `appid`).
    """
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _seen_variables() -> str:
    seen = [f"{n}={os.environ[n]}" for n in _SHOWN_VARS if os.environ.get(n)]
    seen += [f"{n} set" for n in _SET_ONLY_VARS if os.environ.get(n)]
    return ", ".join(seen) or "none of IDENTITY_ENDPOINT, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE, ..."


def _tcp_probe(host: str, port: int, timeout: float) -> str | None:
    """None when something accepts a connection at host:port, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        from secretbridge.azure.causes import describe_cause

        return describe_cause(exc, f"{host}:{port}") or f"no connection to {host}:{port} ({type(exc).__name__})"


@contextlib.contextmanager
def _imds_override(address: str | None) -> Iterator[None]:
    """azure-identity reads `AZURE_POD_IDENTITY_AUTHORITY_HOST` when it asks IMDS: point it at the
    address the doctor probed, so the token request goes where the probe went."""
    if address is None:
        yield
        return
    name = "AZURE_POD_IDENTITY_AUTHORITY_HOST"
    before = os.environ.get(name)
    os.environ[name] = f"http://{address}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _token_refusal(exc: BaseException) -> str | None:
    """"the token endpoint answered 400: Identity not found" from azure-identity's error."""
    message = str(getattr(exc, "message", "") or "")
    first = next((line for line in message.splitlines() if line.strip()), "")
    first = first.removeprefix("(None) ").strip()
    status = getattr(exc, "status_code", None)
    if not first:
        return None
    return f"the token endpoint answered {status}: {first}" if status else first


@dataclass
class _Identity:
    credential: Any
    http: Any
    object_id: str | None

    async def close(self) -> None:
        await self.credential.close()
        await self.http.close()


async def _identity(report: _Report, metadata: ParsedMetadata, scope: str,
                    options: DoctorOptions) -> _Identity | None:
    """The credential step and the token step; the credential (kept open) when a token was had."""
    from secretbridge.azure.causes import Cause, classify_cause, describe_cause
    from secretbridge.azure.identity import (
        AuthMethod,
        build_credential,
        describe_identity,
        plan_identity,
        select_auth_method,
    )
    from secretbridge.azure.redaction import safe_cause
    from secretbridge.azure.vault import HttpSession

    identity = describe_identity(metadata)
    seen = _seen_variables()
    try:
        method = select_auth_method(metadata)
    except SecretStoreError as err:  # azureAuthMethods is none, or lists nothing configured
        report.add("credential", FAIL, f"{err.message} (seen: {seen})",
                   "list in azureAuthMethods a method this environment has, or configure one it lists")
        return None
    # An unreachable IMDS is the end only when nothing usable follows managed identity: in a chain the
    # next method is tried (the Azure CLI on a laptop, when `az` is installed).
    after = [c.method for c in plan_identity(metadata).usable if c.method is not AuthMethod.MANAGED_IDENTITY]
    alone = not after or (after == [AuthMethod.CLI] and shutil.which("az") is None)
    imds: str | None = None
    if alone and method is AuthMethod.MANAGED_IDENTITY and not any(os.environ.get(n) for n in _MI_ENDPOINT_VARS):
        host, port = options.imds()
        problem = await asyncio.to_thread(_tcp_probe, host, port, min(options.timeout, 2.0))
        if problem is not None:
            report.add(
                "credential", FAIL,
                f"{identity} through IMDS ({host}:{port}), because no managed-identity endpoint is set "
                f"(seen: {seen}); IMDS is not reachable: {problem}",
                "run where a managed identity is assigned (Container Apps and App Service set IDENTITY_ENDPOINT; "
                "VMs and AKS nodes answer on IMDS), or for development set azureClientId, azureTenantId and "
                "azureClientSecret (or use workload identity)",
            )
            return None
        imds = f"{host}:{port}"
        why = f"IMDS reachable at {imds}, no managed-identity endpoint set"
    else:
        advertised = next((n for n in _MI_ENDPOINT_VARS if os.environ.get(n)), None)
        why = (f"{advertised} is set" if method is AuthMethod.MANAGED_IDENTITY and advertised
               else f"azureAuthMethods starts with {method.value}")
    report.add("credential", OK, f"{identity} ({why}; seen: {seen})")

    http = await HttpSession.create(connection_timeout=options.timeout, read_timeout=options.timeout)
    credential: Any = None
    try:
        with _imds_override(imds if os.environ.get(IMDS_ENV) or options.imds_address else None):
            credential = build_credential(metadata, transport=http.transport(), retry_total=0, retry_status=0)
            async with asyncio.timeout(options.timeout * 2):
                token = await credential.get_token(scope)
    except Exception as exc:
        if credential is not None:
            await credential.close()
        await http.close()
        if isinstance(exc, SecretStoreError):
            detail = exc.message
        elif isinstance(exc, TimeoutError):
            detail = f"the token endpoint did not answer within {options.timeout * 2:g}s"
        else:
            detail = describe_cause(exc) or _token_refusal(exc) or safe_cause(exc, metadata)
        kind = classify_cause(exc)
        client_id = metadata.get("azureClientId")
        if kind in (Cause.DNS, Cause.REFUSED, Cause.TLS, Cause.TIMEOUT, Cause.UNREACHABLE):
            fix = ("the token endpoint cannot be reached: on Container Apps assign an identity to the app "
                   "(az containerapp identity assign --system-assigned, or --user-assigned <identity id>), "
                   "then restart the revision")
        elif client_id:
            fix = (f"assign the user-assigned identity with client id {client_id} to this app "
                   "(az containerapp identity assign --user-assigned <its resource id>), or fix azureClientId")
        else:
            fix = "check that this app has an identity assigned and that azureAuthMethods fits where it runs"
        report.add("token", FAIL, f"no Key Vault token for {identity}: {detail}", fix)
        return None
    claims = token_claims(token.token)
    oid = claims.get("oid")
    if oid:
        extra = "".join(f", {label} {claims[key]}" for key, label in (("tid", "tenant"), ("appid", "app id"))
                        if claims.get(key))
        report.add("token", OK, f"got a Key Vault token for {identity}: object id {oid}{extra}")
    else:
        report.add("token", WARN, f"got a Key Vault token for {identity}, but it is not a JWT naming the "
                                  "principal (no oid); role fixes below show <object id>")
    return _Identity(credential, http, str(oid) if oid else None)


# ---------------------------------------------------------------------------------------------
# The vault host: DNS, TCP, TLS


def _address_kind(address: str, canonical: str) -> str:
    ip = ipaddress.ip_address(address.split("%")[0])
    if ".privatelink." in canonical.lower():
        return "private-link address"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_private:
        return "private address"
    return "public address"


def _trust_store() -> str:
    if os.environ.get("SSL_CERT_FILE"):
        return f"SSL_CERT_FILE={os.environ['SSL_CERT_FILE']}"
    if os.environ.get("SSL_CERT_DIR"):
        return f"SSL_CERT_DIR={os.environ['SSL_CERT_DIR']}"
    paths = ssl.get_default_verify_paths()
    return f"the system store ({paths.cafile or paths.capath or paths.openssl_cafile})"


def _name_of(parts: Any) -> str:
    return ", ".join(f"{k}={v}" for rdn in parts for k, v in rdn if k in ("commonName", "organizationName")) or "?"


def _presented_issuer(address: str, port: int, host: str, timeout: float) -> str:
    """Who issued the certificate that failed verification (read without verifying it)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
        from cryptography import x509

        certificate = x509.load_der_x509_certificate(der or b"")
        return certificate.issuer.rfc4514_string()
    except (OSError, ValueError, ImportError):
        return "unknown"


def _host_steps(report: _Report, url: str, options: DoctorOptions) -> bool:
    """dns, tcp and tls steps for the vault at `url`; False when one failed (the rest is not tried)."""
    from secretbridge.azure.causes import describe_cause
    from secretbridge.azure.hosts import is_azure_vault_host

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    try:
        answers = options.resolve(host, port)
    except OSError as exc:
        return report.add(
            "dns", FAIL, describe_cause(exc, host) or f"cannot resolve host {host}",
            "check the vault name (vaultName / the reference); for a private endpoint, link the private DNS "
            "zone privatelink.vaultcore.azure.net to the app's virtual network (or its custom DNS server)",
        )
    canonical = next((a[3] for a in answers if len(a) > 3 and a[3]), "")
    addresses = list(dict.fromkeys(str(a[4][0]) for a in answers))
    kinds = {_address_kind(a, canonical) for a in addresses}
    via = f" via CNAME {canonical}" if canonical and canonical.lower() != host.lower() else ""
    report.add("dns", OK, f"{host} resolves to {', '.join(addresses)}{via} ({', '.join(sorted(kinds))})")
    if "public address" in kinds and is_azure_vault_host(host):
        report.steps[-1].detail += "; if the vault allows only its private endpoint, this app's DNS misses the " \
                                   "privatelink.vaultcore.azure.net zone"

    address = addresses[0]
    problem = _tcp_probe(address, port, options.timeout)
    if problem is not None:
        shown = problem.replace(f"{address}:{port}", f"{host}:{port} ({address})")
        return report.add(
            "tcp", FAIL, shown,
            "a firewall or the vault's network rules stop this app: allow outbound 443 to the vault (the "
            "AzureKeyVault service tag, or the private endpoint), and check the vault's Networking settings",
        )
    report.add("tcp", OK, f"connected to {host}:{port} ({address})")

    store = _trust_store()
    context = ssl.create_default_context()
    try:
        with socket.create_connection((address, port), timeout=options.timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            peer = tls.getpeercert() or {}
            version = tls.version()
    except (ssl.SSLError, ssl.CertificateError) as exc:
        described = describe_cause(exc, f"{host}:{port}") or f"TLS handshake with {host}:{port} failed"
        issuer = _presented_issuer(address, port, host, options.timeout)
        return report.add(
            "tls", FAIL, f"{described}; the certificate presented was issued by {issuer}; trust store: {store}",
            "if a TLS-inspecting proxy or a private CA sits in between, put its CA certificate in a bundle and "
            "set SSL_CERT_FILE to it; otherwise this address is not the vault",
        )
    except OSError as exc:
        return report.add("tls", FAIL, describe_cause(exc, f"{host}:{port}") or
                          f"TLS handshake with {host}:{port} failed ({type(exc).__name__})",
                          "check for a proxy or firewall that cuts TLS connections to the vault")
    subject = _name_of(peer.get("subject", ()))
    issuer = _name_of(peer.get("issuer", ()))
    report.add("tls", OK, f"{version} with {host}: certificate for {subject}, issued by {issuer}, valid until "
                          f"{peer.get('notAfter', '?')}; trusted by {store}")
    return True


# ---------------------------------------------------------------------------------------------
# Permission


def _vault_name(url: str) -> str:
    from secretbridge.azure.hosts import is_azure_vault_host

    host = urlsplit(url).hostname or ""
    return host.split(".")[0] if is_azure_vault_host(host) else "<vault-name>"


def role_fix(vault_url: str, object_id: str | None, *, access_policy: bool, kind: str = "secret") -> str:
    """The command that grants an identity read access to a vault's secrets (or, `kind`, to the
    public parts of its certificates or keys)."""
    from secretbridge.azure.vault import GRANTS

    grant = GRANTS[kind]
    name = _vault_name(vault_url)
    oid = object_id or "<object id>"
    if access_policy:
        return (f"the vault uses access policies, not Azure RBAC: az keyvault set-policy --name {name} "
                f"--object-id {oid} {grant.permissions} (or move the vault to RBAC: "
                f"az keyvault update --name {name} --enable-rbac-authorization true, then grant the role)")
    return (f'az role assignment create --role "{grant.role}" --assignee-object-id {oid} '
            f'--scope "$(az keyvault show --name {name} --query id -o tsv)"')


def _fix_for(err: SecretStoreError, vault_url: str, object_id: str | None, kind: str = "secret") -> str:
    from secretbridge.azure.causes import Cause

    if err.cause == Cause.FORBIDDEN_ACCESS_POLICY:
        return role_fix(vault_url, object_id, access_policy=True, kind=kind)
    if err.cause == Cause.FORBIDDEN_RBAC:
        return role_fix(vault_url, object_id, access_policy=False, kind=kind)
    if err.cause == Cause.UNAUTHORIZED:
        return "the vault refused the token: the identity belongs to another tenant than the vault"
    if err.cause == Cause.NOT_FOUND:
        return "check the secret's name (and nameMapping / keyPrefix), or create it"
    return "see the detail; run the doctor again once it is fixed"


async def _permission_steps(report: _Report, reader: Any, identity: _Identity, wanted: str | None,
                            store: Any) -> bool:
    """List the secrets, then read one: `wanted` (as the app names it) or the first one listed."""
    first: str | None = None
    prefix: str = store.key_prefix
    try:
        async with contextlib.aclosing(reader.list_properties()) as listing:
            async for props in listing:
                name = str(props.name or "")
                if props.enabled is not False and name.lower().startswith(prefix.lower()) and name != prefix:
                    first = name[len(prefix):]  # the app's name for it
                    break
    except SecretStoreError as err:
        return report.add("list", FAIL, err.message, _fix_for(err, reader.vault_url, identity.object_id))
    report.add("list", OK, f"{reader.label} lets the identity list secrets"
               + ("" if first else " (it holds no enabled secret)"))
    target = wanted if wanted is not None else first
    if target is None:
        return report.add("read", WARN, "no secret to read", "name one with --secret NAME")
    try:
        secret = await reader.get(store.vault_name(target), shown=target)
    except SecretStoreError as err:
        from secretbridge.azure.causes import Cause

        verdict = WARN if err.cause in (Cause.NOT_FOUND, Cause.DISABLED) else FAIL
        return report.add("read", verdict, err.message, _fix_for(err, reader.vault_url, identity.object_id))
    if not secret.certificate:
        return report.add("read", OK, f"read secret {show_name(target)} from {reader.label}")
    report.add("read", OK, f"read secret {show_name(target)} from {reader.label}: a certificate's, with its "
               "private key (certificateFormat / request metadata format serve it as PEM)")
    # Its public parts are other objects, with roles of their own: needed only for objectType requests.
    for kind in ("certificate", "key"):
        try:
            await reader.get_object(kind, store.vault_name(target), shown=target)
        except SecretStoreError as err:
            report.add(kind, WARN, f"{err.message} (needed only for request metadata objectType={kind})",
                       _fix_for(err, reader.vault_url, identity.object_id, kind))
        else:
            report.add(kind, OK, f"read the public {kind} of {show_name(target)} (request metadata objectType={kind})")
    return True


def _vault_scope(metadata: ParsedMetadata) -> str:
    from secretbridge.azure.hosts import VAULT_SUFFIXES
    from secretbridge.azure.identity import environment_of

    return f"https://{VAULT_SUFFIXES[environment_of(metadata)]}/.default"


async def _keyvault(report: _Report, validated: stores.Validated, options: DoctorOptions) -> None:
    from secretbridge.azure.vault import VaultReader

    metadata = validated.metadata
    store: Any = validated.cls(metadata, instance=report.component, policy=options.policy)
    # Credential and host are independent: both are walked, so one run shows every problem.
    identity = await _identity(report, metadata, _vault_scope(metadata), options)
    reachable = _host_steps(report, store.vault_url, options)
    if identity is None:
        return
    if not reachable:
        await identity.close()
        return
    try:
        reader = VaultReader(
            store.vault_url, identity.credential, identity=store.identity, label=store.vault_label,
            verify_challenge_resource=store.verify_challenge_resource, max_retries=0,
            transport=identity.http.transport(), metadata=metadata,
        )
        try:
            async with asyncio.timeout(options.timeout * 4):
                await _permission_steps(report, reader, identity, options.secret, store)
        except TimeoutError:
            report.add("read", FAIL, f"{store.vault_label} did not answer within {options.timeout * 4:g}s",
                       "check the vault's networking and any proxy in between")
        finally:
            await reader.close()
    finally:
        await identity.close()


# ---------------------------------------------------------------------------------------------
# The Container Apps volume


async def _containerapps(report: _Report, validated: stores.Validated, options: DoctorOptions) -> None:
    from secretbridge.azure.identity import environment_of
    from secretbridge.azure.references import is_reference, vet_reference
    from secretbridge.backends.volume import DATA_LINK, Skip, Volume, decode, valid_name

    metadata = validated.metadata
    volume = Volume(Path(str(metadata["secretsPath"])).expanduser())
    try:
        volume.check()
    except SecretStoreError as err:
        report.add(
            "volume", FAIL, err.message,
            f"mount the app's secrets at {volume.path}: in the container app template add a volume with "
            f"storageType: Secret and a volumeMount with mountPath: {volume.path} (or fix secretsPath)",
        )
        return
    atomic = os.path.islink(volume.path / DATA_LINK)
    layout = "atomic writer (..data link)" if atomic else "plain folder of files"
    names = [n for n in volume.names() if valid_name(n)]
    if not names:
        report.add("volume", WARN, f"{volume.path}: {layout}, no secrets",
                   "add secrets to the app (az containerapp secret set) and to the volume's secret list")
        return
    report.add("volume", OK, f"{volume.path}: {layout}, {len(names)} secret{'s' * (len(names) != 1)}")

    references: dict[str, str] = {}
    for name in names:
        try:
            text = decode(name, volume.read(name))
        except Skip as skip:
            report.add("secret", WARN, skip.error.message, "check the file's type and mode")
            continue
        except SecretStoreError as err:
            report.add("secret", WARN, err.message)
            continue
        if is_reference(text):
            references[name] = text
    if not references:
        return
    if not metadata["resolveKeyVaultReferences"]:
        report.add("references", WARN,
                   f"{len(references)} Key Vault reference(s) are served as literal text "
                   "(resolveKeyVaultReferences is false)",
                   'set resolveKeyVaultReferences: "true" to resolve them with the app\'s identity')
        return
    allowed = options.policy.vault_hosts
    targets = {}
    for name, text in references.items():
        try:
            targets[name] = vet_reference(name, text, environment_of(metadata), allowed)
        except SecretStoreError as err:
            report.add("reference", FAIL, err.message,
                       "point the Container Apps secret at https://<vault>.vault.azure.net/secrets/<name>")
    if not targets:
        return
    vaults = sorted({t.key.rpartition("/secrets/")[0] for t in targets.values()})
    identity = await _identity(report, metadata, _vault_scope(metadata), options)
    reachable = [url for url in vaults if _host_steps(report, url, options)]
    if identity is None:
        return
    from secretbridge.azure.reference_reader import ReferenceReader

    resolver = ReferenceReader(metadata, timeout=options.timeout, max_retries=0)
    try:
        for name, target in targets.items():
            vault_url = target.key.rpartition("/secrets/")[0]
            if vault_url not in reachable:
                continue
            try:
                async with asyncio.timeout(options.timeout * 2):
                    await resolver.get(target.key, target.version)
            except SecretStoreError as err:
                report.add("reference", FAIL, f"secret {show_name(name)} → {target.shown}: {err.message}",
                           _fix_for(err, vault_url, identity.object_id))
            except TimeoutError:
                report.add("reference", FAIL, f"secret {show_name(name)} → {target.shown}: no answer in time")
            else:
                report.add("reference", OK, f"secret {show_name(name)} → {target.shown} resolves")
    finally:
        await resolver.close()
        await identity.close()


# ---------------------------------------------------------------------------------------------
# The socket


def _may(info: os.stat_result, uid: int, gid: int, bits: str) -> bool:
    """Whether uid/gid (not root) gets `bits` ("w", "x", "wx") on a file with `info`'s mode."""
    shift = 6 if info.st_uid == uid else 3 if info.st_gid == gid else 0
    mask = sum({"r": 4, "w": 2, "x": 1}[b] for b in bits)
    return (info.st_mode >> shift) & mask == mask


def _socket_steps(path: Path, instances: Sequence[str], options: DoctorOptions) -> list[Step]:
    report = _Report(_SOCKET)
    uid, gid = options.daprd_uid, options.daprd_gid
    who = f"daprd's user (uid {uid}, gid {gid})"
    folder = path.parent
    try:
        folder_info = folder.stat()
    except OSError as err:
        report.add("folder", FAIL, f"{folder} cannot be used ({err.strerror})",
                   "start secretbridge serve with --socket-folder on the volume daprd shares")
        return report.steps
    if not stat.S_ISDIR(folder_info.st_mode):
        report.add("folder", FAIL, f"{folder} is not a directory", "use a folder for --socket-folder")
        return report.steps
    mode = stat.S_IMODE(folder_info.st_mode)
    if not _may(folder_info, uid, gid, "x"):
        report.add("folder", FAIL, f"{who} cannot enter {folder} (mode {mode:04o}, owner "
                                   f"{folder_info.st_uid}:{folder_info.st_gid})",
                   f"chmod o+x {folder} (or give it group {gid} with g+x)")
    else:
        report.add("folder", OK, f"{folder}: mode {mode:04o}, owner {folder_info.st_uid}:{folder_info.st_gid}")
    try:
        info = path.lstat()
    except OSError as err:
        report.add("socket", FAIL, f"{path} is not there ({err.strerror})",
                   "start secretbridge serve before daprd (daprd scans the folder once at start)")
        return report.steps
    if not stat.S_ISSOCK(info.st_mode):
        report.add("socket", FAIL, f"{path} is not a socket", "remove it and restart secretbridge")
        return report.steps
    mode = stat.S_IMODE(info.st_mode)
    owner = f"mode {mode:04o}, owner {info.st_uid}:{info.st_gid}"
    if not _may(info, uid, gid, "w"):
        report.add("socket", FAIL, f"{who} cannot connect to {path} ({owner})",
                   f"serve with --socket-mode 0660 and give the socket group {gid} (or run daprd in the "
                   "socket's group); --socket-mode 0666 lets every local user connect")
    else:
        report.add("socket", OK, f"{who} can connect to {path} ({owner})")
    steps = report.steps
    steps += _grpc_steps(path, instances, options)
    return steps


def _grpc_steps(path: Path, instances: Sequence[str], options: DoctorOptions) -> list[Step]:
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from secretbridge.proto.components.v1 import common_pb2, secretstore_pb2, secretstore_pb2_grpc

    report = _Report(_SOCKET)
    service = secretstore_pb2.DESCRIPTOR.services_by_name["SecretStore"].full_name
    with grpc.insecure_channel(f"unix://{path}") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=options.timeout)
            replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=options.timeout
            )
            listed = [s.name for reply in replies for s in reply.list_services_response.service]
        except (grpc.RpcError, grpc.FutureTimeoutError) as err:
            code = err.code().name if isinstance(err, grpc.RpcError) else "no connection"
            report.add("reflection", FAIL, f"no reflection answer on {path} ({code})",
                       "is secretbridge serve running on this socket? (daprd discovers it by reflection)")
            return report.steps
        if service not in listed:
            report.add("reflection", FAIL, f"{path} lists {', '.join(listed) or 'nothing'}, not {service}",
                       "this socket is not a secretbridge secret store")
            return report.steps
        report.add("reflection", OK, f"{path} lists {service}")
        stub = secretstore_pb2_grpc.SecretStoreStub(channel)
        steps = report.steps
        for name in instances:
            one = _Report(name)
            try:
                reply = stub.Features(common_pb2.FeaturesRequest(), metadata=[("x-component-instance", name)],
                                      timeout=options.timeout)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    one.add("instance", FAIL, f"instance '{name}' is not initialised on {path}",
                            "daprd calls Init once at its start: check daprd's log for this Component, that "
                            "the socket existed before daprd started, and that the Component is scoped to "
                            "this app")
                else:
                    one.add("instance", FAIL, f"Features on instance '{name}': {err.code().name}",
                            "see secretbridge's log")
            else:
                features = ", ".join(reply.features) or "none"
                one.add("instance", OK, f"instance '{name}' is initialised (features: {features})")
            steps += one.steps
    return steps


# ---------------------------------------------------------------------------------------------
# The whole walk


async def diagnose(options: DoctorOptions) -> list[Step]:
    """Every step for every Component in `options.resources`, then the socket's."""
    from secretbridge.tools.check import FROM_REFERENCE, component_documents, component_name, raw_metadata

    steps: list[Step] = []
    names: list[str] = []
    for source, document in component_documents(options.resources, options.name):
        if isinstance(document, str):
            steps.append(Step(source, "metadata", FAIL, document, "fix the YAML"))
            continue
        name = component_name(document)
        names.append(name)
        report = _Report(name)
        raw, problems = raw_metadata(document)
        try:
            validated = stores.validate_component(raw, options.policy)
        except SecretStoreError as err:
            problems.append(err.message)
            validated = None
        if validated is None or problems:
            report.add("metadata", FAIL, f"{source}: " + "; ".join(problems),
                       f"run secretbridge check {source} and fix what it names")
            steps += report.steps
            continue
        report.metadata = validated.metadata
        backend = validated.cls.backend
        hidden = sorted(k for k, v in raw.items() if v == FROM_REFERENCE)
        warnings = "; ".join([text for _, text in validated.warnings] + [
            f"{', '.join(hidden)} come(s) from a secretKeyRef or envRef that daprd resolves; the doctor "
            "cannot see the value, so steps that need it may fail here and pass under daprd"] * bool(hidden))
        report.add("metadata", WARN if warnings else OK,
                   f"{source}: backend {backend}" + (f"; {warnings}" if warnings else ""))
        try:
            if backend == "keyvault":
                await _keyvault(report, validated, options)
            elif backend == "containerapps":
                await _containerapps(report, validated, options)
        except SecretStoreError as err:
            report.add("backend", FAIL, err.message)
        steps += report.steps
    if options.socket is not None:
        steps += await asyncio.to_thread(_socket_steps, options.socket, names, options)
    return steps


def usable(steps: Sequence[Step]) -> bool:
    """Exit status 0: no step failed."""
    return bool(steps) and all(s.verdict != FAIL for s in steps)


def render(steps: Sequence[Step]) -> str:
    """One line per step: verdict, component, step, detail, and the fix when there is one."""
    lines = []
    for s in steps:
        fix = f"  → fix: {s.fix}" if s.fix and s.verdict != OK else ""
        lines.append(f"{s.verdict:<4}  {s.component}  {s.step}: {s.detail}{fix}")
    return "\n".join(lines) + "\n"


def render_json(steps: Sequence[Step]) -> str:
    """The steps as a JSON list of {component, step, verdict, detail, fix}."""
    return json.dumps([asdict(s) for s in steps], indent=2) + "\n"


def run(options: DoctorOptions, *, as_json: bool = False, out: Any = None) -> int:
    """Diagnose, print, and return the exit status (0 only when every Component is usable)."""
    import sys

    out = out or sys.stdout
    quiet: Mapping[str, int] = {"azure": logging.CRITICAL, "secretbridge": logging.CRITICAL}
    before = {name: logging.getLogger(name).level for name in quiet}
    for name, level in quiet.items():  # the SDK logs each failed token request; the steps say it
        logging.getLogger(name).setLevel(level)
    try:
        steps = asyncio.run(diagnose(options))
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
    if not steps:
        out.write(f"no Component of type secretstores.{options.name} found and no --socket given\n")
        return 1
    out.write(render_json(steps) if as_json else render(steps))
    return 0 if usable(steps) else 1
