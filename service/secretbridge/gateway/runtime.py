"""Run the gateway: load resources, discover stores, Init components, serve, stop cleanly.

Loading follows daprd: secret stores that reference no other store come first;
a Component whose `secretKeyRef` items name a store in `auth.secretStore` waits
until that store is loaded (one that never loads leaves it unloaded, as daprd
leaves it parked). A failed Init is fatal unless the Component says
`ignoreErrors: true`. Components that are not discovered pluggable secret
stores are skipped with a warning: they are not served here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web

from secretbridge import __version__
from secretbridge.core.metadata import parse_duration
from secretbridge.core.sockets import TYPE_PREFIX, socket_folder
from secretbridge.gateway import NOT_DAPRD, grpc_api, http_api
from secretbridge.gateway.client import ComponentClient, StoreCallError
from secretbridge.gateway.components import Component, load_components, load_configuration
from secretbridge.gateway.discovery import DiscoveryError, PluggableStore, discover, match
from secretbridge.gateway.refs import Resolved, SubstitutionError, resolve
from secretbridge.gateway.scopes import SecretScope
from secretbridge.gateway.secrets import SecretsAPI

log = logging.getLogger("secretbridge.gateway")


class GatewayError(RuntimeError):
    """The gateway cannot start (message says why, without secret values)."""


@dataclass
class GatewayOptions:
    """What `secretbridge gateway` is told on its command line."""

    resources_paths: list[str]
    http_port: int = 3500
    grpc_port: int = 50001
    config: str | None = None
    socket_folder: str = field(default_factory=lambda: str(socket_folder()))
    listen_address: str = "127.0.0.1"
    app_id: str = ""
    discovery_timeout: float = 5.0
    #: As daprd's DAPR_API_TOKEN: every API call but health must carry it.
    api_token: str | None = field(default_factory=lambda: os.environ.get("DAPR_API_TOKEN") or None)


@dataclass
class LoadedComponent:
    """A Component that passed Init and Features."""

    component: Component
    client: ComponentClient
    features: list[str]
    resolved: Resolved


class Gateway:
    """The secrets-API stand-in; `load()` then `start()`, or `run()` for both plus signals."""

    def __init__(self, options: GatewayOptions) -> None:
        self.options = options
        self.loaded: dict[str, LoadedComponent] = {}
        self.scopes: dict[str, SecretScope] = {}
        self.api = SecretsAPI({}, self.scopes)
        self.http_port = 0
        self.grpc_port = 0
        self._ready = False
        self._runner: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None

    # -- loading --------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the configuration and components, discover the stores, Init each component."""
        if self.options.config:
            try:
                self.scopes.update(load_configuration(self.options.config).secret_scopes)
            except ValueError as exc:
                raise GatewayError(str(exc)) from None
        try:
            components = load_components(self.options.resources_paths)
        except ValueError as exc:
            raise GatewayError(str(exc)) from None
        try:
            discovered = await discover(self.options.socket_folder, self.options.discovery_timeout)
        except DiscoveryError as exc:
            # daprd logs this and carries on with no pluggable component at all.
            log.error("could not initialize pluggable components", extra={"cause": str(exc)})
            discovered = {}
        candidates = self._select(components, discovered)
        await self._init_in_order(candidates)
        self.api.stores = {name: entry.client for name, entry in self.loaded.items()}

    def _select(
        self, components: list[Component], discovered: dict[str, PluggableStore]
    ) -> list[tuple[Component, PluggableStore]]:
        chosen = []
        for component in components:
            if component.scopes and self.options.app_id not in component.scopes:
                log.info(
                    "component is scoped to other app IDs; not loaded",
                    extra={"component": component.name, "app_id": self.options.app_id},
                )
                continue
            store = match(discovered, component.type, component.version)
            if store is None and component.type.lower().startswith(TYPE_PREFIX) and not component.ignore_errors:
                # As daprd: a secret store whose type nothing registered stops the runtime.
                raise GatewayError(
                    f"failed to init component {component.name} ({component.type}/{component.version}): couldn't "
                    f"find secret store {component.type}/{component.version} (no such socket in "
                    f"{self.options.socket_folder}; start secretbridge serve first: the folder is scanned once)"
                )
            if store is None:
                why = (
                    "no pluggable secret store with this type was found on the socket folder"
                    if component.type.lower().startswith(TYPE_PREFIX)
                    else "not a secret store; this gateway serves only pluggable secret stores"
                )
                log.warning(
                    "skipping component",
                    extra={
                        "component": component.name,
                        "type": component.type,
                        "version": component.version,
                        "socket_folder": self.options.socket_folder,
                        "reason": why,
                    },
                )
                continue
            chosen.append((component, store))
        return chosen

    async def _init_in_order(self, candidates: list[tuple[Component, PluggableStore]]) -> None:
        pending = list(candidates)
        while pending:
            progressed = False
            waiting = []
            names_pending = {c.name for c, _ in pending}
            for component, store in pending:
                ref_store = component.auth_secret_store if component.references_secrets else ""
                if ref_store and ref_store not in self.loaded:
                    if ref_store in names_pending and ref_store != component.name:
                        waiting.append((component, store))
                        continue
                    log.error(
                        "component waits for a secret store that is not loaded; not loaded",
                        extra={"component": component.name, "secret_store": ref_store},
                    )
                    progressed = True
                    continue
                await self._init_one(component, store)
                progressed = True
            if not progressed:
                for component, _ in waiting:
                    log.error(
                        "component waits for a secret store that never loads (a cycle?); not loaded",
                        extra={"component": component.name, "secret_store": component.auth_secret_store},
                    )
                return
            pending = waiting

    async def _init_one(self, component: Component, store: PluggableStore) -> None:
        ref_client = None
        if component.references_secrets and component.auth_secret_store:
            ref_client = self.loaded[component.auth_secret_store].client
        try:
            resolved = await resolve(component, ref_client.get if ref_client else None, app_id=self.options.app_id)
        except SubstitutionError as exc:
            # daprd exits here whatever ignoreErrors says.
            raise GatewayError(f"component {component.name}: {exc}") from None
        try:
            timeout = parse_duration(component.init_timeout)
        except ValueError:
            raise GatewayError(
                f"component {component.name}: initTimeout {component.init_timeout!r} is not a duration"
            ) from None
        client = ComponentClient(component.name, store)
        try:
            await client.init(resolved.properties, timeout=timeout or None)
            features = await client.features(timeout=timeout or None)
        except StoreCallError as exc:
            await client.close()
            if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                message = f"init timeout for component {component.name} exceeded after {component.init_timeout}"
            else:
                message = f"failed to init component {component.name} ({component.type}): {exc}"
            if component.ignore_errors:
                log.warning("component failed to load; ignoreErrors is set", extra={"cause": message})
                return
            raise GatewayError(message) from None
        self.loaded[component.name] = LoadedComponent(component, client, features, resolved)
        log.info(
            "component loaded",
            extra={
                "component": component.name,
                "type": component.type,
                "version": component.version,
                "capabilities": ",".join(features),
                "secret_refs_resolved": ",".join(resolved.from_secrets),
            },
        )

    # -- serving --------------------------------------------------------------------------------

    def is_ready(self) -> bool:
        """True once components are loaded and both servers listen."""
        return self._ready

    def metadata(self) -> dict[str, Any]:
        """The `/v1.0/metadata` body: daprd's shape, plus which metadata came from references."""
        components = []
        for name, entry in sorted(self.loaded.items()):
            item: dict[str, Any] = {
                "name": name,
                "type": entry.component.type,
                "version": entry.component.version,
            }
            if entry.features:  # daprd omits an empty list
                item["capabilities"] = entry.features
            refs = entry.resolved
            if entry.component.references_secrets or refs.from_env or refs.unresolved:
                # Names of metadata items only: never their values.
                item["resolvedMetadata"] = {
                    "secretKeyRef": refs.from_secrets,
                    "envRef": refs.from_env,
                    "unresolved": refs.unresolved,
                }
            components.append(item)
        return {
            "id": self.options.app_id,
            "runtimeVersion": f"secretbridge-gateway {__version__} (not daprd)",
            "enabledFeatures": [],
            "components": components,
            "extended": {"gateway": NOT_DAPRD},
        }

    async def start(self) -> None:
        """Bind the HTTP and gRPC ports (a busy port is a `GatewayError`)."""
        host = self.options.listen_address
        app = http_api.build_app(self.api, self.is_ready, self.metadata, self.options.api_token)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, self.options.http_port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise GatewayError(f"cannot listen for HTTP on {host}:{self.options.http_port}: {exc.strerror}") from None
        # aiohttp keeps the asyncio server here; it knows the bound port.
        sockets = getattr(site._server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.options.http_port
        # Without this, gRPC's default SO_REUSEPORT lets a second server share a busy port silently.
        token = self.options.api_token
        self._grpc = grpc.aio.server(
            options=[("grpc.so_reuseport", 0)],
            interceptors=[grpc_api.ApiTokenInterceptor(token)] if token else None,
        )
        grpc_api.add_to_server(self._grpc, self.api)
        try:
            self.grpc_port = self._grpc.add_insecure_port(f"{host}:{self.options.grpc_port}")
        except RuntimeError:
            self.grpc_port = 0
        if not self.grpc_port:
            await self.stop()
            raise GatewayError(
                f"cannot listen for gRPC on {host}:{self.options.grpc_port}: the port is in use"
            ) from None
        await self._grpc.start()
        self._ready = True
        log.info(
            "gateway ready",
            extra={
                "http_port": self.http_port,
                "grpc_port": self.grpc_port,
                "components": ",".join(sorted(self.loaded)),
            },
        )

    async def stop(self) -> None:
        """Stop serving and close every component channel."""
        self._ready = False
        if self._grpc is not None:
            await self._grpc.stop(grace=2)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for entry in self.loaded.values():
            await entry.client.close()

    async def run(self) -> int:
        """Load, serve until SIGINT or SIGTERM, stop; the exit code."""
        log.warning(NOT_DAPRD)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            try:
                await self.load()
                await self.start()
            except GatewayError as exc:
                log.error("gateway cannot start", extra={"cause": str(exc)})
                await self.stop()
                return 1
            await stop.wait()
            log.info("gateway stopping")
            await self.stop()
            log.info("gateway stopped")
            return 0
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
