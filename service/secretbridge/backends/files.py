"""How far the file backends (`file`, `containerapps`) may reach: one set of rules for both.

Component metadata names the path, and whoever can drive the socket writes the metadata, so a
path is treated as untrusted:
- nothing under `/proc`, `/sys` or `/dev` is read, whatever the path says or a symlink leads to
  (`/proc/self/environ` holds the identity header, `/dev/zero` never ends);
- only regular files are read: a FIFO, socket or device is refused after an open that cannot
  block (O_NONBLOCK), before a byte is read;
- every read stops at a size cap the operator sets (`serve --max-file-bytes`).
These functions block on the filesystem: call them off the I/O loop (`asyncio.to_thread`).
"""

from __future__ import annotations

import contextlib
import os
import stat

from secretbridge.core.errors import FailedPrecondition

#: Kernel filesystems whose files are process state or devices, never secrets.
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")
#: The flag that raises the per-file cap, for messages.
FILE_CAP_FLAG = "--max-file-bytes"


class NotRegular(FailedPrecondition):
    """The path is a directory, FIFO, socket or device rather than a regular file."""

    def __init__(self, message: str, *, directory: bool) -> None:
        super().__init__(message)
        self.directory = directory


class TooBig(FailedPrecondition):
    """The file is larger than the operator's cap."""


def forbidden_root(path: str | os.PathLike[str]) -> str | None:
    """The kernel filesystem `path` lies in (as given, or once its symlinks are resolved), else None."""
    for candidate in (os.path.abspath(path), os.path.realpath(path)):
        for root in FORBIDDEN_ROOTS:
            if candidate == root or candidate.startswith(root + os.sep):
                return root
    return None


def refuse_kernel_paths(path: str | os.PathLike[str], where: str) -> None:
    """Raise `FailedPrecondition` (prefixed by `where`) when `path` reaches into /proc, /sys or /dev."""
    root = forbidden_root(path)
    if root is not None:
        raise FailedPrecondition(
            f"{where}, which is inside {root}: process state and devices are never read as secrets"
        )


def kind_of(mode: int) -> str:
    """What a non-regular file is, for messages."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def read_fd(fd: int, cap: int, what: str) -> bytes:
    """Read an open regular file to its end, refusing it (`TooBig`) once it passes `cap` bytes.

    `what` starts the message: "metadata property 'secretsFile' names '/x'" + ", which is ..."."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise NotRegular(
            f"{what}, which is {kind_of(info.st_mode)}, not a regular file", directory=stat.S_ISDIR(info.st_mode)
        )
    too_big = TooBig(f"{what}, which is larger than the {cap}-byte cap (the operator's {FILE_CAP_FLAG})")
    if info.st_size > cap:
        raise too_big
    chunks: list[bytes] = []
    total = 0
    while True:
        # A file may grow while it is read: never take more than one byte past the cap.
        chunk = os.read(fd, min(max(info.st_size - total, 0) + 65536, cap + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > cap:
            raise too_big
        chunks.append(chunk)


def open_nonblocking(path: str | os.PathLike[str], *, follow: bool = True) -> int:
    """`os.open` for reading that cannot hang on a FIFO (O_NONBLOCK); OSError as `os.open` raises it."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    return os.open(path, flags)


def read_regular_file(path: str | os.PathLike[str], cap: int, what: str) -> bytes:
    """The bytes of the regular file at `path`, within `cap`; refuses kernel paths and non-regular files.

    Raises `FailedPrecondition` (or its `NotRegular`/`TooBig`) naming `what`; OSError from the open
    (FileNotFoundError, PermissionError, ...) is left to the caller, which knows how to word it.
    """
    refuse_kernel_paths(path, what)
    fd = open_nonblocking(path)
    try:
        # The file actually opened, from the kernel: a link swapped in after the check is caught here.
        with contextlib.suppress(OSError):  # no /proc here: the check above is all there is
            refuse_kernel_paths(os.readlink(f"/proc/self/fd/{fd}"), what)
        return read_fd(fd, cap, what)
    finally:
        os.close(fd)
