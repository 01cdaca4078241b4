"""The `keyvault` backend: Azure Key Vault secrets through a managed identity.

`KeyVaultStore` is the `SecretStore` built from a Component's metadata: vault selection, name mapping
and `keyPrefix`, multi-valued secrets, expiry, and a BulkGet that reads values while it is still
listing, under a bound. Reads go through `secretbridge.azure.vault.VaultReader`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from azure.core.credentials_async import AsyncTokenCredential

from secretbridge.azure.budget import MAX_THROTTLED_RESENDS
from secretbridge.azure.hosts import SECRET_NAME, VAULT_NAME, VAULT_SUFFIXES, AzureEnvironment, vault_host_problem
from secretbridge.azure.identity import (
    AZURE_PROPERTIES,
    build_credential,
    describe_identity,
    environment_of,
    refuse_disabled_identity,
)
from secretbridge.backends.contract import (
    CERTIFICATE_FORMAT,
    JSON_MULTI_VALUED,
    OUTSIDE_VALIDITY,
    ReferenceResolver,
    SecretStore,
    json_members,
)
from secretbridge.core import certificates
from secretbridge.core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    SecretStoreError,
    Unavailable,
)
from secretbridge.core.metadata import Kind, MetadataErrors, ParsedMetadata, Property
from secretbridge.core.names import DEFAULT_VIEW, View, show_name
from secretbridge.core.policy import STRICT, OperatorPolicy
from secretbridge.core.probes import ProbeGate

if TYPE_CHECKING:  # the vault client pulls in aiohttp: `secretbridge check` must not load it
    from secretbridge.azure.vault import HttpSession, VaultReader, VaultSecret

logger = logging.getLogger(__name__)

_NOT_NAME_CHARS = re.compile(r"[^0-9A-Za-z-]")
_PREFIX = re.compile(r"^[0-9A-Za-z-]{0,126}$")
_DEFAULT_TIMEOUT = 30.0
#: Key Vault lists secrets 25 to a page.
LIST_PAGE = 25
#: Secrets warned about being served outside their validity, per instance (then only counted).
_MAX_WARNED = 10_000


KEYVAULT_PROPERTIES: tuple[Property, ...] = (
    Property(
        "vaultName",
        "The Key Vault's name (`myvault`); the host is `<vaultName>.<suffix of azureEnvironment>`. "
        "A full host (`myvault.vault.azure.net`) or the vault's URL (`https://myvault.vault.azure.net/`) "
        "is accepted and sets the environment. "
        "Exactly one of vaultName and vaultUri.",
    ),
    Property(
        "vaultUri",
        "The vault's https URL, for emulators and test doubles (`https://127.0.0.1:8443`); a host outside "
        "Azure only when the operator lists it (`serve --allow-vault-host`). Exactly one of vaultName and vaultUri.",
    ),
    Property(
        "disableChallengeResourceVerification",
        "Accept an authentication challenge whose resource does not match the vault's host. "
        "For emulators the operator lists (`serve --allow-vault-host`) only; refused for a real Key Vault host.",
        Kind.BOOL,
        default=False,
    ),
    JSON_MULTI_VALUED,
    CERTIFICATE_FORMAT,
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
        "refuseExpired",
        "Refuse secrets past their expiry (`exp`) or before their activation date (`nbf`) with "
        "FAILED_PRECONDITION, and leave them out of BulkGet. By default they are served, as Key Vault "
        "and Dapr's built-in store serve them, with a warning (once per secret) and a metric.",
        Kind.BOOL,
        default=False,
    ),
    Property(
        "allowExpired",
        "Deprecated: the opposite of refuseExpired (`false` refuses expired and not-yet-valid secrets).",
        Kind.BOOL,
        deprecated='use refuseExpired (secrets outside their validity are now served by default; '
        'refuseExpired: "true" refuses them); refuseExpired wins when both are set',
    ),
    Property(
        "bulkConcurrency",
        "How many secret values BulkGet reads from the vault at once, while it lists the next pages. "
        "Key Vault allows 4,000 GETs per 10 s per vault, shared by every client: a BulkGet of n secrets "
        "spends n of them however fast it goes; 429s are waited out by the vault's shared budget.",
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
        "Retries of one vault or token-endpoint call (the Azure SDK's retry_total/retry_status); a 429 "
        "is first waited out (Retry-After, for every request to the vault) and resent up to "
        f"{MAX_THROTTLED_RESENDS} times before it counts as one.",
        Kind.INT,
        default=3,
        minimum=0,
        maximum=10,
    ),
)


_Vault = tuple[str, AzureEnvironment, str]  # (url, environment, label for messages)


def _bad(prop: str, text: str) -> MetadataErrors:
    return MetadataErrors([(prop, text)])


def _resolve_vault(metadata: ParsedMetadata) -> _Vault | None:
    """(url, environment, label) of the vault the metadata names; None when daprd resolves it."""
    named, located = metadata.given("vaultName"), metadata.given("vaultUri")
    if named == located:
        raise _bad(
            "vaultName",
            "exactly one of metadata properties 'vaultName' and 'vaultUri' must be set "
            f"({'both are' if named else 'neither is'})",
        )
    if not metadata.known("vaultName" if named else "vaultUri"):
        return None
    name, uri = metadata.get("vaultName"), metadata.get("vaultUri")
    environment = environment_of(metadata)
    if name:
        # A name, a host or the vault's URL (the built-in store accepts the first two and
        # https://<host>; a trailing slash, as the portal copies it, is accepted too).
        name = name.strip().lower()
        if name.startswith("https://"):
            name = name[len("https://"):]
        name = name.rstrip("/").rstrip(".")
        for env, suffix in VAULT_SUFFIXES.items():
            if name.endswith("." + suffix):
                if metadata.given("azureEnvironment") and metadata.known("azureEnvironment") \
                        and env is not environment:
                    raise _bad(
                        "vaultName",
                        f"metadata property 'vaultName' is a host in {env.value}, but 'azureEnvironment' "
                        f"says {environment.value}"
                    )
                name, environment = name[: -len(suffix) - 1], env
                break
        if not VAULT_NAME.match(name) or "--" in name:
            raise _bad(
                "vaultName",
                f"metadata property 'vaultName' must be a Key Vault name (3-24 letters, digits and "
                f"dashes, starting with a letter) or its host; got {show_name(name)}"
            )
        return f"https://{name}.{VAULT_SUFFIXES[environment]}", environment, f"Key Vault '{name}'"
    parts = urlsplit(uri.strip())
    if parts.scheme.lower() != "https":
        raise _bad(
            "vaultUri",
            f"metadata property 'vaultUri' must be an https URL (Key Vault refuses tokens over plain "
            f"HTTP); got {show_name(uri)}"
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        not parts.hostname or parts.username or parts.password or port == -1
        or parts.path not in ("", "/") or parts.query or parts.fragment
    ):
        raise _bad(
            "vaultUri",
            f"metadata property 'vaultUri' must be https://<host>[:<port>] with no path, query or "
            f"credentials; got {show_name(uri)}"
        )
    host = parts.hostname.lower()
    for env, suffix in VAULT_SUFFIXES.items():
        if host.endswith("." + suffix):
            environment = env
            return f"https://{parts.netloc}", environment, f"Key Vault '{host.split('.')[0]}'"
    return f"https://{parts.netloc}", environment, f"Key Vault at https://{parts.netloc}"


class KeyVaultStore(SecretStore):
    """Secrets from one Azure Key Vault, read with the identity the metadata selects."""

    backend: ClassVar[str] = "keyvault"
    summary: ClassVar[str] = "Azure Key Vault, read through a managed identity (or workload identity, or a " \
        "service principal for development)."
    properties: ClassVar[tuple[Property, ...]] = KEYVAULT_PROPERTIES + AZURE_PROPERTIES
    supports_versions: ClassVar[bool] = True
    remote: ClassVar[bool] = True
    serves_certificates: ClassVar[bool] = True
    object_types: ClassVar[tuple[str, ...]] = certificates.OBJECT_TYPES
    #: `bulk_get` takes a `fallback` for secrets it lists but cannot read (the cache's held values).
    bulk_fallback: ClassVar[bool] = True

    def __init__(
        self,
        metadata: ParsedMetadata,
        *,
        instance: str,
        resolver: ReferenceResolver | None = None,
        policy: OperatorPolicy = STRICT,
    ) -> None:
        super().__init__(metadata, instance=instance, resolver=resolver, policy=policy)
        refuse_disabled_identity(metadata)
        vault, prefix = self._settings(metadata, policy)
        assert vault is not None, "Init metadata has every value resolved"
        self.vault_url, self.environment, self.vault_label = vault
        self.verify_challenge_resource = not metadata.get("disableChallengeResourceVerification", False)
        self.key_prefix: str = prefix
        self.dashes = (metadata.get("nameMapping") or "none") == "dashes"
        if metadata.given("refuseExpired") or not metadata.given("allowExpired"):
            self.refuse_expired = bool(metadata.get("refuseExpired", False))
        else:
            self.refuse_expired = not metadata["allowExpired"]
        self._warned_validity: set[str] = set()
        self.bulk_concurrency = int(metadata.get("bulkConcurrency") or 32)
        self.bulk_skip_errors = bool(metadata.get("bulkSkipErrors", False))
        self.max_retries = int(metadata.get("maxRetries") if metadata.get("maxRetries") is not None else 3)
        timeout = metadata.get("requestTimeout")
        self.timeout = float(timeout) if timeout else _DEFAULT_TIMEOUT
        self.identity = describe_identity(metadata)
        self._http: HttpSession | None = None
        self._credential: AsyncTokenCredential | None = None
        self._reader: VaultReader | None = None

    @classmethod
    def validate(cls, metadata: ParsedMetadata, policy: OperatorPolicy = STRICT) -> list[str]:
        """Exactly one of vaultName and vaultUri, each well formed; `azureEnvironment` agreeing
        with a vault host; a vault host outside Azure, and `disableChallengeResourceVerification`,
        only where the operator's `policy` lists the host; `keyPrefix` within Key Vault's name rule.
        Raises `MetadataErrors` listing every rule broken."""
        refuse_disabled_identity(metadata)
        cls._settings(metadata, policy)
        return []

    @classmethod
    def _settings(cls, metadata: ParsedMetadata, policy: OperatorPolicy) -> tuple[_Vault | None, str]:
        """The vault (None when daprd resolves it later) and keyPrefix, every rule checked.

        The host rules run before any client exists, so a refused host gets no request and no
        token request."""
        problems: list[tuple[str, str]] = []
        vault: _Vault | None = None
        try:
            vault = _resolve_vault(metadata)
        except MetadataErrors as err:
            problems += err.problems
        if vault is not None:
            parts = urlsplit(vault[0])
            problem = vault_host_problem(parts.hostname or "", parts.port, policy.vault_hosts)
            if problem is not None:
                problems.append(("vaultUri", f"metadata property 'vaultUri' names {problem}"))
            relaxed = metadata.known("disableChallengeResourceVerification") and metadata.get(
                "disableChallengeResourceVerification"
            )
            if relaxed:
                problem = vault_host_problem(parts.hostname or "", parts.port, policy.vault_hosts, relaxed=True)
                if problem is not None:
                    problems.append((
                        "disableChallengeResourceVerification",
                        f"metadata property 'disableChallengeResourceVerification' is true, but {problem}",
                    ))
        prefix = metadata.get("keyPrefix") or ""
        if metadata.known("keyPrefix") and not _PREFIX.match(prefix):
            problems.append((
                "keyPrefix",
                f"metadata property 'keyPrefix' may hold only letters, digits and '-' (Key Vault's rule for "
                f"names) and be at most 126 characters; got {show_name(prefix)}",
            ))
        if problems:
            raise MetadataErrors(problems)
        return vault, prefix

    # -- lifecycle --------------------------------------------------------------------------------
    async def open(self) -> None:
        """Build the HTTP session, the credential and the vault client on the server's loop."""
        from secretbridge.azure.vault import HttpSession, VaultReader

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

    async def check(self) -> None:
        """List one secret: proves the vault is reachable and the identity may list."""
        await self.reader.check()

    def failing(self) -> str | None:
        """Why the vault or the identity is failing now (from any instance's latest attempt), or None.

        The cache answers a read past its TTL from a held value without waiting while this says so."""
        reader = self._reader
        return reader.failing() if reader is not None else None

    def watch_failure(self, future: asyncio.Future[str]) -> None:
        """Resolve `future` at the next failed attempt against the vault or the identity."""
        if self._reader is not None:
            self._reader.watch_failure(future)

    def queued(self) -> float:
        """How long a request to the vault asked for now would wait for its turn (seconds, 0: none)."""
        return self._reader.queued() if self._reader is not None else 0.0

    def probe_gate(self) -> ProbeGate | None:
        """The vault host's shared probe gate (None before `open`: the cache keeps its own)."""
        return self._reader.probe_gate() if self._reader is not None else None

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
        raise InvalidArgument(f"the secret name {show_name(name)} cannot be used with {self.vault_label}: {why}")

    def _shape(self, name: str, secret: VaultSecret, view: View, *, bulk: bool = False) -> dict[str, str]:
        """A secret as served: a certificate's (by its bundle, or its content type) in the shape
        `view` asks for; anything else as JSON members (multiValued) or `{name: value}`."""
        marked = secret.certificate or (secret.content_type or "").lower() in certificates.CERTIFICATE_TYPES
        shaped = self.shape_certificate(
            name, secret.value, view, content_type=secret.content_type, marked=marked, bulk=bulk
        )
        if shaped is not None:
            return shaped
        return json_members(name, secret.value) if self.multi_valued else {name: secret.value}

    @staticmethod
    def _validity_problem(expires_on: datetime | None, not_before: datetime | None) -> str | None:
        now = datetime.now(UTC)
        if expires_on is not None and expires_on <= now:
            return f"expired at {expires_on.isoformat()}"
        if not_before is not None and not_before > now:
            return f"is not valid before {not_before.isoformat()}"
        return None

    def _served_outside_validity(self, name: str, problem: str) -> None:
        """Count a secret served although it is outside its validity; warn once per secret."""
        self.notice(OUTSIDE_VALIDITY)
        if name in self._warned_validity or len(self._warned_validity) >= _MAX_WARNED:
            return
        self._warned_validity.add(name)
        logger.warning(
            "a secret outside its validity is served, as Key Vault serves it; set refuseExpired to refuse it",
            extra={"instance": self.instance, "backend": self.backend, "secret": name,
                   "vault": self.vault_label, "reason": problem},
        )

    # -- reads ------------------------------------------------------------------------------------
    async def get(self, name: str, version: str | None = None, view: View = DEFAULT_VIEW) -> dict[str, str]:
        """The latest (or `version`) of `name`, or of its certificate's or key's public part
        (`view.object_type`); see the module docstring for errors."""
        vault_name = self.vault_name(name)
        if view.object_type != certificates.SECRET:
            return await self._public_part(name, vault_name, version, view.object_type)
        secret = await self.reader.get(vault_name, version, shown=name)
        self._judge_validity(name, "secret", secret.expires_on, secret.not_before)
        return await self.shape_off_loop(view, lambda: self._shape(name, secret, view))

    def _judge_validity(self, name: str, kind: str, expires_on: datetime | None, not_before: datetime | None) -> None:
        problem = self._validity_problem(expires_on, not_before)
        if problem is not None:
            if self.refuse_expired:
                raise FailedPrecondition(
                    f"{kind} {show_name(name)} in {self.vault_label} {problem}, and metadata refuseExpired "
                    "is true"
                )
            self._served_outside_validity(name, problem)

    async def _public_part(self, name: str, vault_name: str, version: str | None, kind: str) -> dict[str, str]:
        """`{name: PEM}` of a certificate's leaf (`cer`; Key Vault keeps the chain only in the
        certificate's secret) or a key's public part (its JWK), read with no right to any secret."""
        found = await self.reader.get_object(kind, vault_name, version, shown=name)
        if not found.enabled:
            raise FailedPrecondition(f"{kind} {show_name(name)} is disabled in {self.vault_label}")
        self._judge_validity(name, kind, found.expires_on, found.not_before)
        try:
            # Public parts only: no private key to check, a fraction of a millisecond on the loop.
            if kind == certificates.CERTIFICATE:
                pem = certificates.certificate_pem(str(found.bundle.get("cer") or ""))
            else:
                jwk = found.bundle.get("key")
                pem = certificates.public_key_pem(jwk if isinstance(jwk, dict) else {})
        except certificates.CertificateProblem as problem:
            raise FailedPrecondition(
                f"{kind} {show_name(name)} in {self.vault_label} cannot be served as PEM: {problem}"
            ) from None
        return {name: pem}

    async def markers(
        self, names: Collection[str], max_pages: int | None = None
    ) -> tuple[dict[str, tuple[float, str]], int] | None:
        """Change detection for the cache: one listing, 25 secrets a page, instead of a read per name.

        For each of `names` the vault lists: (its latest version's `updated`, as epoch seconds, and a
        fingerprint of `updated`, `enabled`, `exp` and `nbf`, which any new version or attribute
        change alters), and the pages it took. None when more than `max_pages` pages would be needed.
        """
        wanted: dict[str, str] = {}
        for name in names:
            with contextlib.suppress(InvalidArgument):
                wanted[self.vault_name(name).lower()] = name
        found: dict[str, tuple[float, str]] = {}
        seen = 0
        async with contextlib.aclosing(self.reader.list_properties()) as listing:
            async for props in listing:
                seen += 1
                if max_pages is not None and math.ceil(seen / LIST_PAGE) > max_pages:
                    return None
                asked = wanted.get((props.name or "").lower())
                if asked is None:
                    continue
                updated = props.updated_on.timestamp() if props.updated_on is not None else 0.0
                fingerprint = ":".join(
                    str(v) for v in (
                        updated, props.enabled,
                        props.expires_on.timestamp() if props.expires_on else "",
                        props.not_before.timestamp() if props.not_before else "",
                    )
                )
                found[asked] = (updated, fingerprint)
        return found, max(1, math.ceil(seen / LIST_PAGE))

    async def bulk_get(
        self,
        limit: int | None = None,
        view: View = DEFAULT_VIEW,
        *,
        fallback: Callable[[str], dict[str, str] | None] | None = None,
    ) -> dict[str, dict[str, str]]:
        """Every enabled secret under `keyPrefix` (currently valid ones only with `refuseExpired`),
        at most `limit` of them.

        `fallback(name)`: for a secret the vault lists but fails to read (unavailable, throttled past
        retries, no answer in time), the value held elsewhere (the cache's, within maxStale) or None.
        Such secrets are answered from it; the call fails only if some have none, saying how many.

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
        # Secrets no read and no fallback could answer (unavailability only), and why.
        missing: list[str] = []
        failure: list[SecretStoreError] = []

        async def read_values() -> None:
            while (item := await queue.get()) is not None:
                app_name, vault_name = item
                try:
                    # Deleted or disabled since it was listed: as if it had not been listed.
                    secret = await reader.get_if_present(vault_name, shown=app_name)
                    shaped = None if secret is None else await self.shape_off_loop(
                        view, lambda: self._shape(app_name, secret, view, bulk=True)  # noqa: B023 - awaited here
                    )
                except (Unavailable, DeadlineExceeded) as exc:
                    held = fallback(app_name) if fallback is not None else None
                    if held is not None:
                        results[app_name] = held
                        continue
                    if fallback is None and not self.bulk_skip_errors:
                        raise type(exc)(f"BulkGet stopped at secret {show_name(app_name)}: {exc.message}") from None
                    missing.append(app_name)
                    failure.append(exc)
                    continue
                except SecretStoreError as exc:
                    if not self.bulk_skip_errors:
                        raise type(exc)(f"BulkGet stopped at secret {show_name(app_name)}: {exc.message}") from None
                    logger.warning(
                        "BulkGet left out a secret it could not read",
                        extra={"instance": self.instance, "backend": self.backend, "secret": app_name,
                               "error": type(exc).__name__, "reason": exc.message},
                    )
                    continue
                if secret is None or shaped is None:
                    continue
                problem = self._validity_problem(secret.expires_on, secret.not_before)
                if problem is not None:
                    if self.refuse_expired:
                        continue  # expired since it was listed
                    self._served_outside_validity(app_name, problem)
                results[app_name] = shaped

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
                        if props.enabled is False or (
                            self.refuse_expired and self._validity_problem(props.expires_on, props.not_before)
                        ):
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
        if missing and not self.bulk_skip_errors:
            raise type(failure[0])(
                f"BulkGet could not read {len(missing)} of the {len(order)} secrets listed and no value is held for "
                f"them (first: {show_name(missing[0])}): {failure[0].message}"
            )
        for app_name in missing:
            logger.warning(
                "BulkGet left out a secret it could not read",
                extra={"instance": self.instance, "backend": self.backend, "secret": app_name,
                       "error": type(failure[0]).__name__, "reason": failure[0].message},
            )
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


__all__ = ["KEYVAULT_PROPERTIES", "KeyVaultStore"]
