"""The one interface every backend implements.

A store takes names and its parsed metadata, and returns plain dicts or raises
the project's errors (`secretbridge.core.errors`). It knows nothing of gRPC, wire
messages, instances, caching or name filtering: those live in front of it.
All I/O methods are coroutines run on the server's single asyncio loop, so a
store must never block that loop (use the azure `aio` clients, or
`asyncio.to_thread` for the filesystem when a read may be slow). The one
synchronous read, `read_now`, is the fast path a gRPC worker tries first.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

from secretbridge.core import certificates
from secretbridge.core.errors import FailedPrecondition
from secretbridge.core.metadata import Kind, ParsedMetadata, Property
from secretbridge.core.names import DEFAULT_VIEW, View, show_name
from secretbridge.core.policy import STRICT, OperatorPolicy

T = TypeVar("T")

#: The one feature a Dapr secret store can advertise.
MULTIPLE_KEY_VALUES_PER_SECRET = "MULTIPLE_KEY_VALUES_PER_SECRET"

#: Events a store reports through `SecretStore.notice` for the runtime to count (a bounded set).
#: A Key Vault secret served although it is past its `exp` or before its `nbf`.
OUTSIDE_VALIDITY = "outside_validity"
NOTICES: tuple[str, ...] = (OUTSIDE_VALIDITY,)


def _ignore(event: str) -> None:
    """The default notice hook: nobody is counting (validate, check, tests)."""

#: staleWait's default (seconds): above what a healthy vault's refresh takes (p99 of reads against the
#: test double on a loaded 2-core machine, measured in docs/keyvault.md), well under what a caller notices.
STALE_WAIT_DEFAULT = 0.05

#: What a remote backend's cache in front of it understands (the runtime's cache reads these values).
CACHE_PROPERTIES: tuple[Property, ...] = (
    Property(
        "cacheTTL",
        "How long a value read from the backend is served without asking it again; 0 turns the cache off.",
        Kind.DURATION,
        default=30.0,
        minimum=0.0,
    ),
    Property(
        "negativeCacheTTL",
        "How long the backend's answer that a secret is missing (or disabled, expired, or no longer "
        "readable by this identity) is remembered, so a loop asking for it cannot hammer the backend; "
        "0 turns it off.",
        Kind.DURATION,
        default=5.0,
        minimum=0.0,
    ),
    Property(
        "maxStale",
        "When a refresh fails (backend down, throttled, identity endpoint down), how long the last "
        "good value is still served; 0 never serves stale values.",
        Kind.DURATION,
        default=3600.0,
        minimum=0.0,
    ),
    Property(
        "staleWait",
        "How long a read past cacheTTL waits for the refresh it starts (or joins) before it is answered "
        "with the value held (within maxStale, counted and logged as stale): a healthy backend answers "
        "within it, so rotations are seen at once; a failing or throttled one never holds a read longer. "
        "While the backend is known to be failing, held values are answered without waiting at all. "
        "0 always answers held values at once and refreshes behind; at least requestTimeout waits for "
        "the whole refresh unless it fails first.",
        Kind.DURATION,
        default=STALE_WAIT_DEFAULT,
        minimum=0.0,
    ),
    Property(
        "cacheMaxEntries",
        "The most secrets (and versions) kept in memory per instance; the least recently used go first.",
        Kind.INT,
        default=100_000,
        minimum=1,
    ),
    Property(
        "requestTimeout",
        "The longest one backend call may take, retries included, before the read fails with "
        "DEADLINE_EXCEEDED (or is served stale).",
        Kind.DURATION,
        default=5.0,
        minimum=0.001,
    ),
    Property(
        "maxConcurrentRequests",
        "The most backend calls one instance makes at once; more wait their turn.",
        Kind.INT,
        default=32,
        minimum=1,
    ),
    Property(
        "changeDetection",
        "When many cached secrets come due for a refresh together, list the backend (one request per "
        "page of 25) and read again only those that changed, whenever that costs fewer requests than "
        "reading each one.",
        Kind.BOOL,
        default=True,
    ),
    Property(
        "failFast",
        "Fail Init when the backend cannot be reached within 3s (daprd gives Init 5s); by default the "
        "instance starts at once and reaches the backend on its first read.",
        Kind.BOOL,
        default=False,
    ),
)


def cache_warnings(metadata: ParsedMetadata) -> list[tuple[str, str]]:
    """(property, text) for cache settings that work against each other (Init logs them, `check` prints them)."""
    if not (metadata.given("staleWait") and metadata.known("staleWait") and metadata.known("requestTimeout")):
        return []
    if metadata["staleWait"] < metadata["requestTimeout"]:
        return []
    return [(
        "staleWait",
        "metadata property 'staleWait' is at least 'requestTimeout': a read past cacheTTL waits for the whole refresh "
        "(unless an attempt fails first) before the value held is served; keep it well under requestTimeout",
    )]


#: `multiValued` for stores whose secrets are single strings that may hold a JSON object.
JSON_MULTI_VALUED = Property(
    "multiValued",
    "A secret whose value is a JSON object is served as its keys (non-string members as JSON "
    "text); other values are served as {name: value}.",
    Kind.BOOL,
    default=False,
)


#: `certificateFormat`, for the stores that serve certificates (keyvault, file, containerapps).
CERTIFICATE_FORMAT = Property(
    "certificateFormat",
    "How a certificate with its private key (base64 PKCS#12, or PEM; in Key Vault, a certificate's "
    "secret) is served: `raw` as stored; `pem` as one PEM text (private key in PKCS#8, then the "
    "leaf certificate, then its chain), or, with multiValued, as the Kubernetes TLS keys `tls.key`, "
    "`tls.crt` (leaf and chain) and `ca.crt` (chain). Other secrets are served as they are. A call "
    "may ask for another shape with the request metadata `format` (raw, pem, tls).",
    default=certificates.RAW,
    choices=(certificates.RAW, certificates.PEM),
)


def json_members(name: str, value: str) -> dict[str, str]:
    """A multi-valued answer for a string secret: a JSON object's members, else `{name: value}`."""
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        return {name: value}
    if not isinstance(parsed, dict):
        return {name: value}
    return {
        str(key): member if isinstance(member, str) else json.dumps(member, separators=(",", ":"))
        for key, member in parsed.items()
    }


class ReferenceResolver(Protocol):
    """Reads Key Vault secrets by URI (`https://<host>/secrets/<name>`) with the instance's identity.

    The runtime builds it (the Key Vault client behind the instance's cache) for a backend whose
    `wants_resolver` says so; the backend vets each reference before asking.
    """

    async def get(self, name: str, version: str | None = None) -> dict[str, str]:
        """`{uri: value}` for the secret at `uri` (latest, or `version`)."""
        ...

    def peek(self, name: str, version: str | None = None) -> dict[str, str] | None:
        """A fresh cached answer for `uri` from any thread without awaiting anything, else None."""
        ...


class SecretStore(abc.ABC):
    """A backend instance, built from one Component's metadata.

    The constructor does no I/O and trusts metadata `validate` passed; `open` then reaches files
    and clients.
    """

    #: The `metadata.backend` value that selects this store.
    backend: ClassVar[str]
    #: One line for `secretbridge backends` and the docs.
    summary: ClassVar[str]
    #: The metadata this backend understands (beyond the common properties).
    properties: ClassVar[tuple[Property, ...]] = ()
    #: Whether `get` understands a `version_id`.
    supports_versions: ClassVar[bool] = False
    #: Whether the store serves certificates in other shapes (`certificateFormat`, request `format`).
    serves_certificates: ClassVar[bool] = False
    #: What request metadata `objectType` may name (a Key Vault also serves public certificates and keys).
    object_types: ClassVar[tuple[str, ...]] = (certificates.SECRET,)
    #: A network backend: reads go through the cache and carry timeouts.
    remote: ClassVar[bool] = False

    def __init__(
        self,
        metadata: ParsedMetadata,
        *,
        instance: str,
        resolver: ReferenceResolver | None = None,
        policy: OperatorPolicy = STRICT,
    ) -> None:
        self.metadata = metadata
        self.instance = instance
        self.resolver = resolver
        #: What the operator allowed (vault hosts outside Azure, size caps); never from metadata.
        self.policy = policy
        #: Set by the runtime to count what `notice` reports (metrics live above the backends).
        self.on_notice: Callable[[str], None] = _ignore

    def notice(self, event: str) -> None:
        """Report one of `NOTICES` (e.g. a secret served outside its validity) to whoever counts."""
        self.on_notice(event)

    @classmethod
    def validate(cls, metadata: ParsedMetadata, policy: OperatorPolicy = STRICT) -> list[str]:
        """Every rule beyond one property's own that needs no I/O (cross-field ones); returns warnings.

        Raises `MetadataErrors` naming each property and rule broken. Init and `secretbridge
        check` both call it (through `backends.validate_component`), so a Component `check`
        passes is one Init accepts, as far as can be known offline and under the same operator
        `policy`. A property daprd resolves later (`metadata.known(name)` is false) has no value
        yet: rules over it are skipped. The per-property rules (kinds, bounds, choices) live in the
        `Property` declarations.
        """
        return []

    @classmethod
    def wants_resolver(cls, metadata: ParsedMetadata) -> bool:
        """Whether this Component serves Key Vault references and so needs a `ReferenceResolver`."""
        return False

    @property
    def multi_valued(self) -> bool:
        """True when a secret may hold several keys (advertised through Features)."""
        return bool(self.metadata.get("multiValued", False))

    def certificate_shape(self, view: View) -> str:
        """The shape a certificate is served in: the call's `format`, else `certificateFormat`
        (`pem` on a multi-valued instance means the TLS keys)."""
        return view.format if view.format is not None else self._configured_shape

    @functools.cached_property
    def _configured_shape(self) -> str:
        # Asked on every read; the metadata never changes once the store is built.
        configured = str(self.metadata.get("certificateFormat") or certificates.RAW)
        return certificates.TLS if configured == certificates.PEM and self.multi_valued else configured

    async def shape_off_loop(self, view: View, shape: Callable[[], T]) -> T:
        """Run `shape` (a call that may convert a certificate) where it cannot stall the loop: on a
        worker thread when `view` may convert (parsing an RSA key is a tenth of a second of CPU),
        inline when it serves values as stored."""
        if self.certificate_shape(view) == certificates.RAW:
            return shape()
        return await asyncio.to_thread(shape)

    def shape_data(self, name: str, data: dict[str, str], view: View, *, bulk: bool = False) -> dict[str, str]:
        """A secret as the store read it (`{name: value}`, or several keys), with a certificate in the
        shape `view` asks for (see `shape_certificate`); several keys are never a certificate."""
        if self.certificate_shape(view) == certificates.RAW:
            return data  # as stored: the common case, decided before looking at the value
        value = data.get(name) if len(data) == 1 else None
        shaped = self.shape_certificate(name, value or "", view, marked=None if value is not None else False, bulk=bulk)
        return shaped if shaped is not None else data

    def shape_certificate(
        self,
        name: str,
        value: str,
        view: View,
        *,
        content_type: str | None = None,
        marked: bool | None = None,
        bulk: bool = False,
    ) -> dict[str, str] | None:
        """`value` in the certificate shape `view` asks for, or None: serve it as any other secret.

        A value is a certificate when the backend says so (`marked`: Key Vault's bundle) or, where
        it cannot, when it presents itself as one (`certificates.candidate`). A Get whose request
        metadata asks for pem or tls converts whatever it reads, or fails; the instance's
        `certificateFormat`, and BulkGet, leave other secrets as they are. A certificate that does
        not convert is FAILED_PRECONDITION naming the secret and what was wrong, never part of it.
        """
        shape = self.certificate_shape(view)
        if shape == certificates.RAW:
            return None
        strict = view.format is not None and not bulk
        is_certificate = marked if marked is not None else certificates.candidate(value, content_type)
        if not is_certificate and not strict:
            return None
        try:
            return certificates.convert(name, value, shape, content_type if is_certificate else None)
        except certificates.CertificateProblem as problem:
            raise FailedPrecondition(f"secret {show_name(name)} cannot be served as {shape}: {problem}") from None

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Finish setting up on the event loop (read files, build clients).

        Raise `FailedPrecondition` naming the property when a resource it names
        is unusable. Must not need a remote backend to be reachable; `check`
        is for that.
        """

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Prove the backend is reachable (readiness, `failFast`); raise if not."""

    def read_now(self, name: str, version: str | None = None, view: View = DEFAULT_VIEW) -> dict[str, str] | None:
        """The answer `get` would give, synchronously and from memory, or None: "ask `get` on the loop".

        The fast path: the gRPC worker calls it before crossing to the asyncio loop, so it runs
        on any thread, must be cheap (no network, at most a stat or a readlink), and must be safe
        to call concurrently. It may raise what `get` raises (`NotFound`, ...). The default
        answers None, which is always correct.
        """
        return None

    @abc.abstractmethod
    async def get(self, name: str, version: str | None = None, view: View = DEFAULT_VIEW) -> dict[str, str]:
        """One secret: `{name: value}` single-valued, `{key: value, ...}` multi-valued.

        `name` is the name the app asked for; the store applies its own name
        mapping but keys single-valued `data` by this name. Raise `NotFound`
        for an unknown secret or version. `view` is what the request metadata asked for
        (the runtime refuses views the store's `object_types` and `serves_certificates` rule out).
        """

    @abc.abstractmethod
    async def bulk_get(self, limit: int | None = None, view: View = DEFAULT_VIEW) -> dict[str, dict[str, str]]:
        """Every secret the store serves, `{name: {key: value}}`, at most `limit` of them
        (certificates in the shape `view` asks for)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients, watchers and files. Called once, on re-Init or shutdown."""
