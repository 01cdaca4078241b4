"""Where pluggable component sockets live: one rule for `serve`, the gateway and `dev`.

daprd reads only `DAPR_COMPONENTS_SOCKETS_FOLDER`; the Kubernetes injector sets
`DAPR_COMPONENT_SOCKETS_FOLDER` (singular) on every container, and daprd then falls back to
the default folder. Honouring both here, daprd's first, lines secretbridge up with daprd in
either set-up.
"""

from __future__ import annotations

import os
from pathlib import Path

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
