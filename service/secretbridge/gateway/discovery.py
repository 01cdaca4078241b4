"""Find pluggable secret stores on the socket folder, the way daprd does.

daprd lists the folder (`DAPR_COMPONENTS_SOCKETS_FOLDER`, default
`/tmp/dapr-components-sockets`), skips entries that are not sockets, asks each
socket for its services through gRPC reflection **v1alpha**, and registers every
socket that lists `dapr.proto.components.v1.SecretStore` as the component type
`secretstores.<file name without extension>`, lower-cased. A Component then
matches it when its `spec.type` is that name (any case) and its `version` is
empty, `v0` or `v1`. A folder that does not exist is the same as an empty one;
a socket whose reflection call fails fails the whole discovery, as in daprd.
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from secretbridge.core.sockets import TYPE_PREFIX

log = logging.getLogger("secretbridge.gateway.discovery")

SECRET_STORE_SERVICE = "dapr.proto.components.v1.SecretStore"
#: Versions that match a pluggable component registered without one (daprd's IsInitialVersion).
INITIAL_VERSIONS = ("", "v0", "v1")


class DiscoveryError(RuntimeError):
    """The folder could not be listed or a socket did not answer reflection."""


@dataclass(frozen=True)
class PluggableStore:
    """A discovered pluggable secret store: its component type and its socket."""

    type: str
    socket: str

    @property
    def target(self) -> str:
        """The gRPC target for this socket."""
        return f"unix://{self.socket}"


async def list_services(socket_path: str, timeout: float = 5.0) -> list[str]:
    """The service names a socket lists through reflection v1alpha."""
    async with grpc.aio.insecure_channel(f"unix://{socket_path}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        call = stub.ServerReflectionInfo(iter([request]), timeout=timeout)
        names: list[str] = []
        async for response in call:
            if response.HasField("error_response"):
                raise DiscoveryError(
                    f"reflection on {socket_path} answered an error: {response.error_response.error_message}"
                )
            names.extend(service.name for service in response.list_services_response.service)
        return names


async def discover(folder: str, timeout: float = 5.0) -> dict[str, PluggableStore]:
    """Every pluggable secret store in `folder`, keyed by lower-cased component type."""
    base = Path(folder)
    if not base.exists():
        log.info("socket folder does not exist; no pluggable components", extra={"folder": folder})
        return {}
    try:
        entries = sorted(base.iterdir())
    except OSError as exc:
        raise DiscoveryError(f"could not list pluggable components unix sockets in {folder}: {exc}") from None
    found: dict[str, PluggableStore] = {}
    for entry in entries:
        try:
            mode = entry.lstat().st_mode
        except OSError:
            continue  # removed while we looked
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISSOCK(mode):
            log.warning("could not use socket for file", extra={"file": str(entry)})
            continue
        try:
            services = await list_services(str(entry), timeout)
        except grpc.aio.AioRpcError as exc:
            raise DiscoveryError(f"unable to list services on {entry}: {exc.code().name} {exc.details()}") from None
        name = entry.name[: len(entry.name) - len(entry.suffix)] if entry.suffix else entry.name
        if SECRET_STORE_SERVICE in services:
            ctype = (TYPE_PREFIX + name).lower()
            found[ctype] = PluggableStore(type=ctype, socket=str(entry))
            log.info(
                "pluggable component was successfully registered",
                extra={"component_type": ctype, "service": SECRET_STORE_SERVICE, "socket": str(entry)},
            )
    return found


def match(discovered: dict[str, PluggableStore], ctype: str, version: str) -> PluggableStore | None:
    """The discovered store a Component's `spec.type` / `spec.version` selects, if any."""
    if version.lower() not in INITIAL_VERSIONS:
        return None
    return discovered.get(ctype.lower())
