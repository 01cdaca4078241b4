"""Instances that outlive a restart of secretbridge: each instance's Init metadata, kept on disk.

daprd sends Init once per Component and never again, not even after secretbridge restarts
(a crash, an OOM kill, a liveness kill, a new image). So the metadata of every instance that
initialised is kept in a file, and `serve` opens those instances again at start.

Where: `<socket folder>/.secretbridge-state/<socket name>/` by default. In Kubernetes and Container
Apps the socket volume outlives a container restart and nothing else does; it dies with the pod,
and so does this state. daprd's socket scan skips folders, so the state folder does not disturb it.

What: the folder is 0700 and each file 0600, owned by secretbridge's user; a file is written to a
temporary name, flushed to disk and renamed, so a crash leaves the old file or the new, never half.
The volume is on the node's disk, so a property declared `sensitive` (a client secret, a
certificate password, an inline certificate) is never written, nor is a property no backend
declares (it is ignored anyway, and nothing says it is not a secret). An instance that needed a
property that was not kept is not recovered: its calls say it needs a new Init from daprd.

A file that cannot be read or parsed is logged and skipped, never fatal.

Beside the file of each instance with a cache, `<digest>.names` keeps the NAMES (never values)
of the latest-version secrets its caches held (a remote store's secrets, the Key Vault reference
URIs a store resolved), so that a restarted secretbridge can read them again before an outage
needs them (a warm restart). Names are not secrets, but the file is kept owner-only and written
the same atomic way all the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from secretbridge import backends as stores
from secretbridge.core.errors import SecretStoreError
from secretbridge.core.metadata import Property

log = logging.getLogger(__name__)

#: The state folder's name inside the socket folder.
STATE_FOLDER = ".secretbridge-state"
FORMAT_VERSION = 1
#: A state file is a few hundred bytes; anything much larger is not ours.
MAX_STATE_BYTES = 1 << 20
#: The most secret names kept per instance and cache for a warm restart.
MAX_NAMES = 10_000
#: The caches whose names are kept: a remote store's secrets, and the Key Vault references
#: (secret URIs without version) a store resolves.
NAME_KINDS = ("names", "references")
#: A names file holds at most MAX_NAMES names of at most 127 characters (Key Vault's limit), JSON-quoted.
MAX_NAMES_BYTES = 4 << 20


def default_state_dir(socket_folder: Path, name: str) -> Path:
    """Where `serve --name <name>` keeps its instances by default: on the socket volume."""
    return socket_folder / STATE_FOLDER / name


@dataclass(frozen=True)
class Saved:
    """One instance as it was kept: the metadata written, and the sensitive properties left out."""

    instance: str
    metadata: dict[str, str]
    #: Canonical names of the sensitive properties the Init carried and the file does not.
    withheld: tuple[str, ...]


def split_metadata(raw: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """(what may be written, the sensitive properties withheld) for one Init's metadata.

    Keys are kept as daprd sent them; which property a key is follows the same
    case-insensitive, alias-aware lookup as Init's decoding.
    """
    try:
        cls = stores.store_class(next((v for k, v in raw.items() if k.lower() == "backend"), ""))
    except SecretStoreError:
        return {}, ()  # an Init that failed is never saved
    by_spelling: dict[str, Property] = {}
    for prop in stores.properties_for(cls):
        for spelling in (prop.name, *prop.aliases):
            by_spelling[spelling.lower()] = prop
    kept: dict[str, str] = {}
    withheld: list[str] = []
    for key, value in raw.items():
        found = by_spelling.get(key.lower())
        if found is None:
            continue
        if found.sensitive:
            if value.strip():
                withheld.append(found.name)
            continue
        kept[key] = value
    return kept, tuple(sorted(set(withheld)))


class StateStore:
    """The state folder of one `serve`: save, forget and load instances' Init metadata.

    Methods do blocking file I/O; the runtime calls them off the event loop.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, instance: str) -> Path:
        digest = hashlib.sha256(instance.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return self.folder / f"{digest}.json"

    def _names_path(self, instance: str) -> Path:
        return self._path(instance).with_suffix(".names")

    def _ensure_folder(self) -> None:
        """Create the folder 0700; refuse one that is not a plain folder of ours.

        The parent is shared by every `serve --name` on the socket folder, perhaps as different
        users: it is made traversable but not listable (0711), each one's own folder 0700.
        """
        if not self.folder.parent.exists():
            with contextlib.suppress(FileExistsError):
                self.folder.parent.mkdir(mode=0o711, parents=True)
                os.chmod(self.folder.parent, 0o711)  # mkdir's mode is filtered by the umask
        with contextlib.suppress(FileExistsError):
            self.folder.mkdir(mode=0o700)
        info = self.folder.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise OSError(f"{self.folder} is not a folder")
        if info.st_uid != os.geteuid():
            raise OSError(f"{self.folder} belongs to uid {info.st_uid}, not to secretbridge's user")
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(self.folder, 0o700)

    def save(self, instance: str, raw: Mapping[str, str]) -> Saved:
        """Keep an instance's Init metadata (without its sensitive properties), atomically."""
        kept, withheld = split_metadata(raw)
        self._ensure_folder()
        body = json.dumps(
            {"version": FORMAT_VERSION, "instance": instance, "metadata": kept, "withheld": list(withheld)},
            sort_keys=True,
        ).encode()
        self._write(self._path(instance), body)
        return Saved(instance, kept, withheld)

    def _write(self, target: Path, body: bytes) -> None:
        """Write `body` to `target` owner-only: a temporary file, flushed, renamed, the folder flushed."""
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)

    def forget(self, instance: str) -> None:
        """Remove an instance's files (a failed Init); nothing to do when there are none."""
        self._path(instance).unlink(missing_ok=True)
        self._names_path(instance).unlink(missing_ok=True)

    def save_names(self, instance: str, kept: Mapping[str, list[str]]) -> None:
        """Keep the names (never values) an instance's caches hold, by cache (NAME_KINDS), at most
        MAX_NAMES each; none held removes the file."""
        lists = {kind: list(kept.get(kind, ()))[:MAX_NAMES] for kind in NAME_KINDS}
        if not any(lists.values()):
            self._names_path(instance).unlink(missing_ok=True)  # nothing held: no file, as before any read
            return
        self._ensure_folder()
        body = json.dumps({"version": FORMAT_VERSION, "instance": instance, **lists}, sort_keys=True).encode()
        self._write(self._names_path(instance), body)

    def load_names(self, instance: str) -> dict[str, list[str]]:
        """The names kept for an instance, by cache; none when there is no file, or one that is not
        ours (logged)."""
        path = self._names_path(instance)
        try:
            data = json.loads(self._read_owned(path, MAX_NAMES_BYTES))
            if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION or data.get("instance") != instance:
                raise ValueError("not a secretbridge names file of this version for this instance")
            kept: dict[str, list[str]] = {}
            for kind in NAME_KINDS:
                names = data.get(kind, [])
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise ValueError("malformed fields")
                kept[kind] = names[:MAX_NAMES]
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError) as err:
            log.warning("names file ignored; the instance starts cold",
                        extra={"file": str(path), "cause": f"{type(err).__name__}: {_short(err)}"})
            return {}
        return kept

    def load(self) -> list[Saved]:
        """Every instance kept here; unreadable or foreign files are logged and skipped."""
        try:
            self._ensure_folder()
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return []
        except OSError as err:
            log.warning(
                "instance state folder unusable; no instance is recovered",
                extra={"folder": str(self.folder), "cause": f"{type(err).__name__}: {err.strerror or err}"},
            )
            return []
        found: list[Saved] = []
        for name in names:
            path = self.folder / name
            if name.startswith(".") and name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # left by a crash between write and rename
                continue
            if not name.endswith(".json"):
                continue
            try:
                saved = self._read(path)
            except (OSError, ValueError, TypeError) as err:
                log.warning(
                    "instance state file ignored",
                    extra={"file": str(path), "cause": f"{type(err).__name__}: {_short(err)}"},
                )
                continue
            found.append(saved)
        return found

    @staticmethod
    def _read_owned(path: Path, limit: int) -> bytes:
        """A file's bytes, if it is a regular file of ours, owner-only and at most `limit` bytes."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ValueError("not a regular file")
            if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
                raise ValueError("not owner-only (0600) and owned by secretbridge's user")
            if info.st_size > limit:
                raise ValueError(f"larger than {limit} bytes")
            chunks: list[bytes] = []
            while chunk := os.read(fd, limit + 1):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _read(self, path: Path) -> Saved:
        data = json.loads(self._read_owned(path, MAX_STATE_BYTES))
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ValueError("not a secretbridge instance state file of this version")
        instance, metadata, withheld = data.get("instance"), data.get("metadata"), data.get("withheld", [])
        if not isinstance(instance, str) or not isinstance(metadata, dict) or not isinstance(withheld, list):
            raise ValueError("malformed fields")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("metadata values must be strings")
        if not all(isinstance(w, str) for w in withheld):
            raise ValueError("malformed fields")
        if self._path(instance) != path:
            raise ValueError("the file name does not match the instance it names")
        return Saved(instance, dict(metadata), tuple(withheld))


def _short(err: BaseException) -> str:
    # A JSON error quotes the document at most by position, never its text; OSError by strerror.
    text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return " ".join(text.split())[:200]
