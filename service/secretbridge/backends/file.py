"""`file`: secrets from a JSON or YAML file, with the meaning of Dapr's local.file.

Plain mode flattens nested objects into names joined by `nestedSeparator`
(`{"outer": {"inner": v}}` is the secret `outer:inner`; arrays are indexed,
`list:0`). `multiValued: "true"` makes each top-level object one secret whose
keys are its members, deeper levels joined by the separator (`conn:host`).
Numbers and booleans are served as their JSON text (`5`, `true`), not the
`%!s(float64=5)` Dapr's local.file produces.

The file is read at Init (a missing, unreadable or malformed file fails Init)
and read again when it changes; a change that does not parse (a half-written
save) is logged and the last good content keeps being served. Reads follow
`backends.files` (no /proc, /sys or /dev, regular files only, within the
operator's size cap) and never run on the I/O loop. YAML aliases are refused: a
few lines of them expand into gigabytes. Gets are answered from memory on the
gRPC worker (`read_now`); whether the file changed is checked with one `stat` at
most every `recheckInterval` (1 s), so an edit is served within about a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from secretbridge.backends.contract import CERTIFICATE_FORMAT, SecretStore
from secretbridge.backends.files import read_regular_file
from secretbridge.backends.recheck import RECHECK_INTERVAL, Recheck
from secretbridge.core.errors import FailedPrecondition, NotFound
from secretbridge.core.metadata import Kind, Property
from secretbridge.core.names import DEFAULT_VIEW, View, show_name

log = logging.getLogger(__name__)


class _Unparsable(Exception):
    """The file's text is neither JSON nor YAML, or not a mapping at the top."""


class _AliasRefused(yaml.YAMLError):
    def __init__(self, line: int) -> None:
        super().__init__(f"a YAML alias at line {line}")
        self.line = line


class NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases (`*name`): an alias bomb of a few lines expands into
    gigabytes, and a secrets file has no need of them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise _AliasRefused(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=NoAliasLoader)


def render(value: Any) -> str:
    """A leaf value as secret text: strings as they are, everything else as JSON text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return str(value)  # YAML timestamps, dates and the like


def flatten(value: Any, prefix: str, separator: str, into: dict[str, str]) -> None:
    """Flatten nested mappings and lists into `prefix<sep>key` names."""
    if isinstance(value, Mapping):
        for key, member in value.items():
            flatten(member, f"{prefix}{separator}{key}" if prefix else str(key), separator, into)
    elif isinstance(value, list):
        for index, member in enumerate(value):
            flatten(member, f"{prefix}{separator}{index}" if prefix else str(index), separator, into)
    else:
        into[prefix] = render(value)


def parse_document(text: str, path: Path) -> Mapping[str, Any]:
    """JSON first (the common case), YAML for .yaml/.yml or when JSON fails."""
    document: Any
    yaml_only = path.suffix.lower() in (".yaml", ".yml")
    loaders: tuple[Any, ...] = (_load_yaml,) if yaml_only else (json.loads, _load_yaml)
    problem = "it is empty"
    for load in loaders:
        try:
            document = load(text)
        except _AliasRefused as err:
            raise _Unparsable(f"it uses a YAML alias (*name) at line {err.line}; aliases are not allowed") from None
        except (ValueError, yaml.YAMLError) as err:
            # Report where, not what: the text around the error may be a secret.
            mark = getattr(err, "problem_mark", None)
            line = mark.line + 1 if mark is not None else getattr(err, "lineno", None)
            problem = f"it does not parse (line {line})" if line else "it does not parse"
            continue
        if isinstance(document, Mapping):
            return document
        problem = "its top level is not an object of name: value pairs"
    raise _Unparsable(problem)


@dataclass(frozen=True)
class _Snapshot:
    signature: tuple[int, int, int]  # (inode, size, mtime_ns)
    secrets: dict[str, dict[str, str]]


class FileStore(SecretStore):
    """Secrets from a JSON or YAML file."""

    backend: ClassVar[str] = "file"
    summary: ClassVar[str] = "A JSON or YAML file, as Dapr's local.file; re-read when it changes. For development."
    properties: ClassVar[tuple[Property, ...]] = (
        Property(
            "secretsFile",
            "Path of the JSON or YAML file (relative paths resolve against the working directory).",
            required=True,
        ),
        Property(
            "nestedSeparator",
            "Joins the keys of nested objects into one name.",
            default=":",
            check=lambda v: None if v else "must not be empty",
        ),
        Property(
            "multiValued",
            "Each top-level object is one secret whose members are its keys.",
            Kind.BOOL,
            default=False,
        ),
        CERTIFICATE_FORMAT,
        RECHECK_INTERVAL,
    )
    serves_certificates: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = Path(self.metadata["secretsFile"]).expanduser()
        self.separator: str = self.metadata["nestedSeparator"]
        self.recheck = Recheck(self.metadata["recheckInterval"])
        self._snapshot: _Snapshot | None = None
        self._bad_signature: tuple[int, int, int] | None = None

    def _stat(self) -> tuple[int, int, int]:
        info = os.stat(self.path)
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def _load(self) -> _Snapshot:
        """Read and parse the file; raise FailedPrecondition naming secretsFile if that fails."""
        where = f"metadata property 'secretsFile' names {str(self.path)!r}"
        try:
            signature = self._stat()
            text = read_regular_file(self.path, self.policy.max_file_bytes, where).decode("utf-8")
        except FailedPrecondition:
            raise  # a kernel path, not a regular file, too big: the message says which
        except FileNotFoundError:
            raise FailedPrecondition(f"{where}, which does not exist") from None
        except IsADirectoryError:
            raise FailedPrecondition(f"{where}, which is a directory, not a file") from None
        except PermissionError:
            raise FailedPrecondition(f"{where}, which this process may not read") from None
        except UnicodeDecodeError:
            raise FailedPrecondition(f"{where}, which is not UTF-8 text") from None
        except OSError as err:
            raise FailedPrecondition(f"{where}, which cannot be read ({err.strerror})") from None
        try:
            document = parse_document(text, self.path)
        except _Unparsable as err:
            raise FailedPrecondition(f"{where}, which is not usable JSON or YAML: {err}") from None
        return _Snapshot(signature, self._secrets_of(document))

    def _secrets_of(self, document: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        secrets: dict[str, dict[str, str]] = {}
        if self.multi_valued:
            for name, value in document.items():
                name = str(name)
                if isinstance(value, Mapping | list):
                    members: dict[str, str] = {}
                    flatten(value, "", self.separator, members)
                    secrets[name] = members
                else:
                    secrets[name] = {name: render(value)}
        else:
            flat: dict[str, str] = {}
            flatten(document, "", self.separator, flat)
            secrets = {name: {name: value} for name, value in flat.items()}
        return secrets

    async def open(self) -> None:
        self._snapshot = await asyncio.to_thread(self._load)
        self.recheck.seen()
        log.info(
            "secrets file loaded",
            extra={"instance": self.instance, "path": str(self.path), "secrets": len(self._snapshot.secrets)},
        )

    def _current_now(self) -> dict[str, dict[str, str]]:
        """The latest good content; stats the file at most every recheckInterval (any thread but the loop)."""
        snapshot = self._snapshot
        assert snapshot is not None, "open() was not called"
        # One reader stats (and re-reads a changed file); the others keep serving the snapshot meanwhile.
        if not self.recheck.claim():
            return snapshot.secrets
        try:
            return self._recheck(snapshot)
        finally:
            self.recheck.done()

    async def _current(self) -> dict[str, dict[str, str]]:
        """As `_current_now`, from the loop: a check that is due (a stat, perhaps a re-read) runs on a worker thread."""
        snapshot = self._snapshot
        assert snapshot is not None, "open() was not called"
        if self.recheck.fresh():
            return snapshot.secrets
        return await asyncio.to_thread(self._current_now)

    def _recheck(self, snapshot: _Snapshot) -> dict[str, dict[str, str]]:
        """Re-read the file when its signature changed; the last good content otherwise."""
        try:
            signature = self._stat()
        except OSError:
            signature = None
        if signature is not None and signature != snapshot.signature and signature != self._bad_signature:
            try:
                self._snapshot = snapshot = self._load()
                self._bad_signature = None
                log.info(
                    "secrets file changed; reloaded",
                    extra={"instance": self.instance, "secrets": len(snapshot.secrets)},
                )
            except FailedPrecondition as err:
                self._bad_signature = signature
                log.warning(
                    "secrets file changed but cannot be used; serving its last good content",
                    extra={"instance": self.instance, "cause": err.message},
                )
        return snapshot.secrets

    def read_now(self, name: str, version: str | None = None, view: View = DEFAULT_VIEW) -> dict[str, str]:
        """From memory on the gRPC worker: the file is parsed once per change, not per read."""
        return self._lookup(self._current_now(), name, view)

    def _lookup(
        self, secrets: dict[str, dict[str, str]], name: str, view: View, *, bulk: bool = False
    ) -> dict[str, str]:
        data = secrets.get(name)
        if data is None:
            raise NotFound(f"secret {show_name(name)} not found in {str(self.path)!r}")
        return self.shape_data(name, data, view, bulk=bulk)  # shared, never mutated: callers only serialise it

    async def get(self, name: str, version: str | None = None, view: View = DEFAULT_VIEW) -> dict[str, str]:
        secrets = await self._current()
        return dict(await self.shape_off_loop(view, lambda: self._lookup(secrets, name, view)))

    async def bulk_get(self, limit: int | None = None, view: View = DEFAULT_VIEW) -> dict[str, dict[str, str]]:
        secrets = await self._current()
        names = list(secrets)[:limit] if limit is not None else list(secrets)
        return await self.shape_off_loop(
            view, lambda: {name: dict(self._lookup(secrets, name, view, bulk=True)) for name in names}
        )
