"""The one interface every backend implements.

A store takes names and its parsed metadata, and returns plain dicts or raises
the project's errors (`secretbridge.errors`). It knows nothing of gRPC, wire
messages, instances, caching or name filtering: those live in front of it.
All I/O methods are coroutines run on the server's single asyncio loop, so a
store must never block that loop (use the azure `aio` clients, or
`asyncio.to_thread` for the filesystem when a read may be slow).
"""

from __future__ import annotations

import abc
import json
from typing import Any, ClassVar

from secretbridge.metadata import Kind, ParsedMetadata, Property

#: The one feature a Dapr secret store can advertise.
MULTIPLE_KEY_VALUES_PER_SECRET = "MULTIPLE_KEY_VALUES_PER_SECRET"

#: `multiValued` for stores whose secrets are single strings that may hold a JSON object.
JSON_MULTI_VALUED = Property(
    "multiValued",
    "A secret whose value is a JSON object is served as its keys (non-string members as JSON "
    "text); other values are served as {name: value}.",
    Kind.BOOL,
    default=False,
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


class SecretStore(abc.ABC):
    """A backend instance, built from one Component's metadata."""

    #: The `metadata.backend` value that selects this store.
    backend: ClassVar[str]
    #: One line for `secretbridge backends` and the docs.
    summary: ClassVar[str]
    #: The metadata this backend understands (beyond the common properties).
    properties: ClassVar[tuple[Property, ...]] = ()
    #: Whether `get` understands a `version_id`.
    supports_versions: ClassVar[bool] = False
    #: A network backend: reads go through the cache and carry timeouts.
    remote: ClassVar[bool] = False

    def __init__(self, metadata: ParsedMetadata, *, instance: str) -> None:
        self.metadata = metadata
        self.instance = instance

    @property
    def multi_valued(self) -> bool:
        """True when a secret may hold several keys (advertised through Features)."""
        return bool(self.metadata.get("multiValued", False))

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Finish setting up on the event loop (read files, build clients).

        Raise `FailedPrecondition` naming the property when a resource it names
        is unusable. Must not need a remote backend to be reachable; `check`
        is for that.
        """

    async def check(self) -> None:  # noqa: B027 - optional hook
        """Prove the backend is reachable (readiness, `failFast`); raise if not."""

    @abc.abstractmethod
    async def get(self, name: str, version: str | None = None) -> dict[str, str]:
        """One secret: `{name: value}` single-valued, `{key: value, ...}` multi-valued.

        `name` is the name the app asked for; the store applies its own name
        mapping but keys single-valued `data` by this name. Raise `NotFound`
        for an unknown secret or version.
        """

    @abc.abstractmethod
    async def bulk_get(self, limit: int | None = None) -> dict[str, dict[str, str]]:
        """Every secret the store serves, `{name: {key: value}}`, at most `limit` of them."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients, watchers and files. Called once, on re-Init or shutdown."""
