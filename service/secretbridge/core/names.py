"""Secret names and request metadata, checked before any store sees them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from secretbridge.core.errors import InvalidArgument

MAX_NAME_LENGTH = 1024
_SHOWN = 80


def show_name(name: str) -> str:
    """A name as messages and logs show it: quoted, escaped, and cut when long.

    Names come from callers and may hold control characters or be huge; a
    message must stay one readable line.
    """
    text = name if len(name) <= _SHOWN else name[:_SHOWN] + "…"
    return repr(text)


def check_name(name: str) -> str:
    """Refuse names no backend could hold; return the name unchanged."""
    if not name:
        raise InvalidArgument("the secret name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(
            f"the secret name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if "\x00" in name:
        raise InvalidArgument(f"the secret name {show_name(name)} holds a NUL character")
    return name


@dataclass(frozen=True)
class GetOptions:
    """What a Get's request metadata asks for."""

    version: str | None = None


@dataclass(frozen=True)
class BulkOptions:
    """What a BulkGet's request metadata asks for."""

    limit: int | None = None


def get_options(metadata: Mapping[str, str], *, supports_versions: bool, backend: str) -> GetOptions:
    """Read `version_id`; daprd's `namespace` and anything unknown are ignored."""
    version = metadata.get("version_id", "").strip() or None
    if version is not None:
        if not supports_versions:
            raise InvalidArgument(
                f"request metadata 'version_id' is not supported by the {backend} backend, "
                "which keeps one version of each secret"
            )
        if len(version) > 256 or not version.isprintable():
            raise InvalidArgument(f"request metadata 'version_id' {show_name(version)} is not a version id")
    return GetOptions(version=version)


def bulk_options(metadata: Mapping[str, str]) -> BulkOptions:
    """Read `maxresults`: a whole number; absent, 0 or negative means no limit (as Dapr's stores)."""
    text = metadata.get("maxresults", "").strip()
    if not text:
        return BulkOptions()
    try:
        limit = int(text)
    except ValueError:
        raise InvalidArgument(
            f"request metadata 'maxresults' must be a whole number (0 or less: no limit), got {show_name(text)}"
        ) from None
    return BulkOptions(limit=limit if limit > 0 else None)
