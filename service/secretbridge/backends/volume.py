"""Reading a mounted secret volume safely: the atomic-writer layout, name rules, and file reads
that cannot be steered outside the volume.

Container Apps (like every Kubernetes secret volume) writes files with the kubelet's *atomic
writer*: the files live in a hidden `..<timestamp>` directory, `..data` is a symlink to the current
one, and every secret is a symlink `name -> ..data/name`. An update writes a new timestamped
directory and renames a new `..data` link over the old one, so a reader that follows `..data` sees
either the old set or the new one, never a mixture. A plain directory of regular files is read too.

- A secret name is a file name, never a path: `/`, `.`, `..`, a leading `..` (the writer's
  bookkeeping), NUL and control characters are refused before the filesystem is touched.
- Symlinks are followed only while their real path stays inside the volume; the file actually
  opened is checked again through `/proc/self/fd`, so a link swapped between the check and the
  open cannot leak a file from elsewhere.
- Files are opened without blocking (a FIFO cannot hang a reader) and read within the operator's
  size caps (`backends.files`: one file, and one scan of the whole volume); nothing under /proc,
  /sys or /dev is read.
- The atomic writer may remove a link or folder between our resolving and opening it: such a read
  is retried, and never surfaces as an internal error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from pathlib import Path

from secretbridge.backends.files import (
    FILE_CAP_FLAG,
    NotRegular,
    TooBig,
    open_nonblocking,
    read_fd,
    refuse_kernel_paths,
)
from secretbridge.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, SecretStoreError
from secretbridge.core.names import show_name
from secretbridge.core.policy import DEFAULT_MAX_FILE_BYTES

#: The atomic writer's link to the current timestamped directory.
DATA_LINK = "..data"
#: Linux's limit on one path component.
MAX_FILE_NAME_BYTES = 255
#: Unicode's control characters (category Cc: C0, DEL and C1), found with one scan: this runs on every Get.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
#: Attempts at one read when the atomic writer removes the directory being read from under us.
_READ_ATTEMPTS = 3


# ---------------------------------------------------------------------------------------------
# Names


def check_secret_name(name: str) -> None:
    """Refuse a name that is not a plain file name in the volume (`InvalidArgument` saying why)."""
    why: str | None = None
    if not name:
        why = "it is empty"
    elif "\x00" in name:
        why = "it holds a NUL character"
    elif "/" in name:
        why = "it holds '/'; a secret name is a file name in secretsPath, not a path"
    elif name in (".", ".."):
        why = "'.' and '..' name directories, not secrets"
    elif name.startswith(".."):
        why = "names starting with '..' belong to the volume's own bookkeeping (..data, ..<timestamp>)"
    else:
        control = _CONTROL.search(name)
        if control is not None:
            why = f"it holds the control character U+{ord(control.group()):04X}"
        elif len(name.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
            why = f"a file name is at most {MAX_FILE_NAME_BYTES} bytes long"
    if why is not None:
        raise InvalidArgument(f"the secret name {show_name(name)} cannot be served from a Container Apps volume: {why}")


def valid_name(name: str) -> bool:
    try:
        check_secret_name(name)
    except InvalidArgument:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Reading the volume


class _Swapped(Exception):
    """A link appeared where the resolved path had none: the atomic writer swapped `..data`."""


class Skip(Exception):
    """An entry that is not a servable secret; `quiet` ones (directories, vanished files) are
    left out of BulkGet without a warning."""

    def __init__(self, error: SecretStoreError, *, quiet: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.quiet = quiet


def _inside(path: str, root: str) -> bool:
    return path.startswith(root + os.sep)


def _opened_path(fd: int) -> str | None:
    """The real path of an open file, from the kernel (None where /proc is not mounted)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


class Volume:
    """One mounted secret folder. Every method is synchronous and short; call them off the loop
    when a directory has to be scanned."""

    def __init__(self, path: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self.path = path
        #: Container Apps values are small (Key Vault caps its own at 25 KB); this only stops a
        #: stray huge file from being loaded into memory and onto the wire.
        self.max_file_bytes = max_file_bytes

    def root(self) -> str:
        """The mount's real path (resolved on each use, so a re-pointed secretsPath is followed)."""
        root = os.path.realpath(self.path)
        refuse_kernel_paths(root, f"metadata property 'secretsPath' names {str(self.path)!r}")
        return root

    def check(self) -> None:
        """Raise `FailedPrecondition` naming secretsPath unless it is a readable folder."""
        where = f"metadata property 'secretsPath' names {str(self.path)!r}"
        refuse_kernel_paths(self.path, where)
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise FailedPrecondition(
                f"{where}, which does not exist (mount the Container Apps Secret volume there)"
            ) from None
        except OSError as err:
            raise FailedPrecondition(f"{where}, which cannot be used ({err.strerror})") from None
        if not stat.S_ISDIR(info.st_mode):
            raise FailedPrecondition(f"{where}, which is not a directory")
        try:
            os.listdir(self.path)
        except PermissionError:
            raise FailedPrecondition(f"{where}, which this process may not list") from None
        except OSError as err:
            raise FailedPrecondition(f"{where}, which cannot be listed ({err.strerror})") from None

    def generation(self) -> tuple[int, int, str] | None:
        """What names the volume's current content in the atomic-writer layout, or None for a plain folder.

        `..data`'s target changes with every update (the writer makes a new timestamped directory
        and renames a new link over `..data`), so content read under one generation stays right
        until this changes. One readlink and one stat: cheap enough for every read.
        """
        try:
            target = os.readlink(os.path.join(self.path, DATA_LINK))
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_dev, info.st_ino, target)

    def signature(self, name: str) -> tuple[int, int, int, int] | None:
        """(inode, size, mtime, ctime) of what `name` leads to in a plain folder; None if it cannot be stat'ed.

        A file replaced, rewritten or re-linked changes it; the safe read (`read`) is done again then.
        """
        try:
            info = os.stat(os.path.join(self.path, name))
        except (OSError, ValueError):
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def names(self) -> list[str]:
        """Every candidate secret name: top-level entries, plus `..data`'s (a secret added by a
        swap is in `..data` a moment before its top-level link appears). Sorted."""
        root = self.root()
        found: set[str] = set()
        try:
            found.update(os.listdir(root))
        except OSError as err:
            raise self._gone(err.strerror) from None
        if DATA_LINK in found:
            # Not a folder, or mid-swap: then the top-level links are enough this time.
            with contextlib.suppress(OSError):
                found.update(os.listdir(os.path.join(root, DATA_LINK)))
        return sorted(e for e in found if not e.startswith(".."))

    def _gone(self, why: str | None) -> FailedPrecondition:
        return FailedPrecondition(
            f"metadata property 'secretsPath' names {str(self.path)!r}, which can no longer be listed ({why})"
        )

    def read(self, name: str) -> bytes:
        """The bytes of secret `name` (already checked by `check_secret_name`).

        Raises `Skip` wrapping NotFound (none, a directory, not a regular file),
        PermissionDenied (a link leaving the volume, or an unreadable file) or FailedPrecondition.
        """
        for attempt in range(_READ_ATTEMPTS):
            try:
                root = self.root()
                real = self._locate(root, name)
                return self._read_inside(real, root, name)
            except FileNotFoundError:
                # The atomic writer removed a link or the old timestamped directory between our
                # resolving and opening: resolve again, the new `..data` is in place by now.
                if attempt + 1 == _READ_ATTEMPTS:
                    raise Skip(self._not_found(name), quiet=True) from None
            except _Swapped:
                if attempt + 1 == _READ_ATTEMPTS:  # not a swap after all: a link that never resolves
                    raise Skip(self._not_found(name, " (a symlink that does not resolve)"), quiet=False) from None
        raise AssertionError("unreachable")

    def _not_found(self, name: str, why: str = "") -> NotFound:
        return NotFound(f"secret {show_name(name)} not found in {str(self.path)!r}{why}")

    def _locate(self, root: str, name: str) -> str:
        for folder in (root, os.path.join(root, DATA_LINK)):
            path = os.path.join(folder, name)
            if not os.path.lexists(path):
                continue
            # realpath reads each link after checking it is one: a link the writer removes in
            # between raises FileNotFoundError, which `read` retries.
            real = os.path.realpath(path)
            if not _inside(real, root):
                raise Skip(self._outside(name), quiet=False)
            return real
        if not os.path.isdir(root):
            raise Skip(self._gone("it is gone or not a directory"), quiet=False)
        raise Skip(self._not_found(name), quiet=True)

    def _outside(self, name: str) -> PermissionDenied:
        return PermissionDenied(
            f"secret {show_name(name)} is a symlink whose target is outside secretsPath "
            f"{str(self.path)!r}; it is not followed"
        )

    def _read_inside(self, real: str, root: str, name: str) -> bytes:
        # O_NOFOLLOW: `real` has no links left, so a link here was swapped in after the check.
        # O_NONBLOCK: opening a FIFO must not hang the loop.
        try:
            fd = open_nonblocking(real, follow=False)
        except FileNotFoundError:
            raise
        except PermissionError:
            raise Skip(
                PermissionDenied(
                    f"secret {show_name(name)} exists in {str(self.path)!r} but this process may not read "
                    "it (check the volume's file mode and the container's user)"
                ),
                quiet=False,
            ) from None
        except OSError as err:
            if err.errno == errno.ELOOP:
                # `real` had no links left when resolved: one here was swapped in since (mid-swap).
                raise _Swapped from None
            raise Skip(
                FailedPrecondition(f"secret {show_name(name)} cannot be opened ({err.strerror})"), quiet=False
            ) from None
        try:
            opened = _opened_path(fd)
            if opened is not None and not _inside(opened, root):
                raise Skip(self._outside(name), quiet=False)
            return read_fd(fd, self.max_file_bytes, f"secret {show_name(name)}")
        except NotRegular as err:
            if err.directory:
                raise Skip(self._not_found(name, " (it is a directory, not a secret)"), quiet=True) from None
            raise Skip(self._not_found(name, " (it is not a regular file)"), quiet=False) from None
        except TooBig:
            raise Skip(self._too_big(name), quiet=False) from None
        except OSError as err:
            raise Skip(
                FailedPrecondition(f"secret {show_name(name)} cannot be read ({err.strerror})"), quiet=False
            ) from None
        finally:
            os.close(fd)

    def _too_big(self, name: str) -> FailedPrecondition:
        return FailedPrecondition(
            f"secret {show_name(name)} is larger than the {self.max_file_bytes}-byte cap and is not served "
            f"(the operator's {FILE_CAP_FLAG})"
        )


def decode(name: str, raw: bytes) -> str:
    """A file's bytes as text, or `FailedPrecondition` naming the secret when they are not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FailedPrecondition(
            f"secret {show_name(name)} is not UTF-8 text (invalid byte at offset {err.start}); secrets are "
            "served as text, so store binary values base64-encoded"
        ) from None
