"""Resolve `envRef` and `secretKeyRef` metadata items before a Component's Init, as daprd does.

- `envRef: VAR` reads the gateway's environment; `APP_API_TOKEN` and `DAPR_*`
  are never handed out (daprd refuses them too).
- `secretKeyRef: {name, key}` asks the secret store named in the Component's
  `auth.secretStore`: `Get(key=name, metadata={"namespace": <component
  namespace or "">})`, then picks `data[key]`, or `data[name]` when `key` is
  empty. One Get per secret name per Component. A failure, or an empty value,
  is logged and leaves the item unresolved (an empty string); Init goes on.

Values are never logged: only metadata names, secret names and store names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from secretbridge.gateway.components import Component

log = logging.getLogger("secretbridge.gateway.refs")

#: A store's Get: (secret name, request metadata) -> data.
SecretGetter = Callable[[str, dict[str, str]], Awaitable[dict[str, str]]]


@dataclass
class Resolved:
    """The Init properties of one Component and which items came from where (names only)."""

    properties: dict[str, str] = field(default_factory=dict)
    from_secrets: list[str] = field(default_factory=list)
    from_env: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)


def env_ref_allowed(variable: str) -> bool:
    """Whether daprd would hand this environment variable to a component."""
    upper = variable.upper()
    return upper != "APP_API_TOKEN" and not upper.startswith("DAPR_")


async def resolve(
    component: Component,
    getter: SecretGetter | None,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """Build the flat Init map for `component`, resolving references through `getter`."""
    env = os.environ if environ is None else environ
    out = Resolved()
    cache: dict[str, dict[str, str]] = {}
    failed: set[str] = set()
    for item in component.metadata:
        if item.env_ref:
            if not env_ref_allowed(item.env_ref):
                log.warning(
                    "envRef names a variable components may not read",
                    extra={"component": component.name, "metadata": item.name, "variable": item.env_ref},
                )
                out.properties[item.name] = ""
                out.unresolved.append(item.name)
            elif item.env_ref in env:
                out.properties[item.name] = env[item.env_ref]
                out.from_env.append(item.name)
            else:
                log.warning(
                    "envRef variable is not set",
                    extra={"component": component.name, "metadata": item.name, "variable": item.env_ref},
                )
                out.properties[item.name] = ""
                out.unresolved.append(item.name)
            continue
        ref = item.secret_key_ref
        if ref is None:
            out.properties[item.name] = item.value
            continue
        out.properties[item.name] = item.value
        if getter is None:
            log.warning(
                "secretKeyRef needs auth.secretStore naming a loaded secret store",
                extra={"component": component.name, "metadata": item.name},
            )
            out.unresolved.append(item.name)
            continue
        if ref.name not in cache and ref.name not in failed:
            try:
                cache[ref.name] = await getter(ref.name, {"namespace": component.namespace})
            except Exception as exc:
                # daprd only logs this; the component still initialises.
                log.error(
                    "Error getting secret",
                    extra={
                        "component": component.name,
                        "secret_store": component.auth_secret_store,
                        "secret": ref.name,
                        "cause": str(exc),
                    },
                )
                failed.add(ref.name)
        data = cache.get(ref.name)
        value = "" if data is None else data.get(ref.key or ref.name, "")
        if value:
            out.properties[item.name] = value
            out.from_secrets.append(item.name)
        else:
            if data is not None:
                log.warning(
                    "secretKeyRef key not present (or empty) in the secret",
                    extra={
                        "component": component.name,
                        "metadata": item.name,
                        "secret": ref.name,
                        "key": ref.key or ref.name,
                    },
                )
            out.unresolved.append(item.name)
    return out
