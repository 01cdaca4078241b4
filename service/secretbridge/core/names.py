"""Secret names and request metadata, checked before any store sees them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from secretbridge.core.certificates import FORMATS, OBJECT_TYPE_ALIASES, OBJECT_TYPES, PEM, SECRET
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
class View:
    """Which object a read serves, in which shape (request metadata `objectType` and `format`).

    The default, a secret in the instance's own `certificateFormat`, is what every read without
    that metadata gets; a cache keeps each view of a name apart.
    """

    #: `secret`, or a Key Vault certificate's or key's public part (`certificate`, `key`).
    object_type: str = SECRET
    #: `raw`, `pem` or `tls` asked for by the call; None: the instance's `certificateFormat`.
    format: str | None = None


#: A plain read: the secret as the instance serves it.
DEFAULT_VIEW = View()


@dataclass(frozen=True)
class GetOptions:
    """What a Get's request metadata asks for."""

    version: str | None = None
    view: View = DEFAULT_VIEW


@dataclass(frozen=True)
class BulkOptions:
    """What a BulkGet's request metadata asks for."""

    limit: int | None = None
    view: View = DEFAULT_VIEW


def _choice(
    metadata: Mapping[str, str], key: str, choices: tuple[str, ...], aliases: Mapping[str, str] | None = None
) -> str | None:
    text = metadata.get(key, "").strip()
    if not text:
        return None
    chosen = (aliases or {}).get(text.lower(), text.lower())
    if chosen not in choices:
        raise InvalidArgument(f"request metadata '{key}' must be one of {', '.join(choices)}; got {show_name(text)}")
    return chosen


def view_of(metadata: Mapping[str, str], *, object_types: tuple[str, ...], certificates: bool, backend: str,
            bulk: bool = False) -> View:
    """Read `objectType` and `format`, refusing what this backend (or a BulkGet) cannot serve."""
    object_type = _choice(metadata, "objectType", OBJECT_TYPES, OBJECT_TYPE_ALIASES) or SECRET
    shape = _choice(metadata, "format", FORMATS)
    if object_type != SECRET:
        if bulk:
            raise InvalidArgument(
                f"request metadata 'objectType' {object_type} applies to Get only; BulkGet serves secrets"
            )
        if object_type not in object_types:
            raise InvalidArgument(
                f"request metadata 'objectType' {object_type} is not served by the {backend} backend "
                f"(it serves {', '.join(object_types)})"
            )
        if shape not in (None, PEM):
            raise InvalidArgument(
                f"request metadata 'format' {shape} does not apply to objectType {object_type}, "
                "which is always served as PEM"
            )
        return View(object_type)
    if shape is not None and not certificates:
        raise InvalidArgument(
            f"request metadata 'format' is not supported by the {backend} backend, which serves no certificates"
        )
    return View(SECRET, shape) if shape is not None else DEFAULT_VIEW


def get_options(
    metadata: Mapping[str, str],
    *,
    supports_versions: bool,
    backend: str,
    object_types: tuple[str, ...] = (SECRET,),
    certificates: bool = False,
) -> GetOptions:
    """Read `version_id`, `objectType` and `format`; daprd's `namespace` and anything unknown are ignored."""
    version = metadata.get("version_id", "").strip() or None
    if version is not None:
        if not supports_versions:
            raise InvalidArgument(
                f"request metadata 'version_id' is not supported by the {backend} backend, "
                "which keeps one version of each secret"
            )
        if len(version) > 256 or not version.isprintable():
            raise InvalidArgument(f"request metadata 'version_id' {show_name(version)} is not a version id")
    view = view_of(metadata, object_types=object_types, certificates=certificates, backend=backend)
    return GetOptions(version=version, view=view)


def bulk_options(
    metadata: Mapping[str, str], *, certificates: bool = False, backend: str = "this"
) -> BulkOptions:
    """Read `maxresults` (a whole number; absent, 0 or negative means no limit, as Dapr's stores)
    and `format`."""
    view = view_of(metadata, object_types=(SECRET,), certificates=certificates, backend=backend, bulk=True)
    text = metadata.get("maxresults", "").strip()
    if not text:
        return BulkOptions(view=view)
    try:
        limit = int(text)
    except ValueError:
        raise InvalidArgument(
            f"request metadata 'maxresults' must be a whole number (0 or less: no limit), got {show_name(text)}"
        ) from None
    return BulkOptions(limit=limit if limit > 0 else None, view=view)
