"""Where pluggable component sockets live: one rule for `serve`, the gateway and `dev`.

daprd reads only `DAPR_COMPONENTS_SOCKETS_FOLDER`; the Kubernetes injector sets
`DAPR_COMPONENT_SOCKETS_FOLDER` (singular) on every container, and daprd then falls back to
the default folder. Honouring both here, daprd's first, lines secretbridge up with daprd in
either set-up.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from secretbridge.core.errors import FailedPrecondition

#: The variable daprd reads.
DAPRD_FOLDER_ENV = "DAPR_COMPONENTS_SOCKETS_FOLDER"
#: The variable the Dapr sidecar injector sets on component containers.
INJECTOR_FOLDER_ENV = "DAPR_COMPONENT_SOCKETS_FOLDER"
DEFAULT_SOCKET_FOLDER = "/tmp/dapr-components-sockets"
DEFAULT_SOCKET_NAME = "secretbridge"
#: A socket `<name>.sock` that serves the SecretStore service is the Component type `secretstores.<name>`.
TYPE_PREFIX = "secretstores."
FOLDER_HELP = f"${DAPRD_FOLDER_ENV}, then ${INJECTOR_FOLDER_ENV}, then {DEFAULT_SOCKET_FOLDER}"


def socket_folder(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The socket folder: `explicit` (a flag), then daprd's variable, then the injector's, then the default."""
    for candidate in (explicit, os.environ.get(DAPRD_FOLDER_ENV), os.environ.get(INJECTOR_FOLDER_ENV)):
        if candidate:
            return Path(candidate)
    return Path(DEFAULT_SOCKET_FOLDER)


#: The flag that names the folder, for messages.
FOLDER_FLAG = "--socket-folder"
#: A folder secretbridge creates: others may reach the socket through it, never add or remove files.
CREATED_FOLDER_MODE = 0o755


class FolderRefused(FailedPrecondition):
    """The socket folder cannot be used safely; the message names the folder and the flag."""


def prepare_folder(folder: Path) -> list[str]:
    """Create the socket folder if needed and check that it is safe to bind in; returns warnings.

    A folder another non-root user owns is refused: its owner could replace the socket with one
    of their own and receive daprd's calls. A folder others may write to without the sticky bit
    (an `emptyDir`, `/tmp` without `+t`) is used with a warning: anyone who can write there can
    remove the socket.
    """
    try:
        info = folder.stat()
    except FileNotFoundError:
        try:
            folder.mkdir(parents=True, mode=CREATED_FOLDER_MODE)
            os.chmod(folder, CREATED_FOLDER_MODE)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass
        except OSError as err:
            raise FolderRefused(f"cannot create socket folder {folder} ({err.strerror}); set {FOLDER_FLAG}") from None
        info = folder.stat()
    except OSError as err:
        raise FolderRefused(f"cannot use socket folder {folder} ({err.strerror}); set {FOLDER_FLAG}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise FolderRefused(f"socket folder {folder} is not a directory; set {FOLDER_FLAG}")
    if info.st_uid not in (0, os.geteuid()):
        raise FolderRefused(
            f"socket folder {folder} is owned by uid {info.st_uid}, another user who could replace the socket; "
            f"use a folder owned by this user (uid {os.geteuid()}) or root ({FOLDER_FLAG})"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FolderRefused(f"socket folder {folder} is not writable by this process (uid {os.geteuid()}); "
                            f"set {FOLDER_FLAG}")
    warnings = []
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        warnings.append(
            f"socket folder {folder} is writable by every user and has no sticky bit: anyone on this host can "
            f"remove or replace the socket (chmod +t it, or choose another {FOLDER_FLAG})"
        )
    return warnings
