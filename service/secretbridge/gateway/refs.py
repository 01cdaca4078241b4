"""Resolve `envRef` and `secretKeyRef` metadata items before a Component's Init, as daprd does.

- `envRef: VAR` reads the gateway's environment; `APP_API_TOKEN` and `DAPR_*`
  are never handed out (daprd refuses them too).
- `secretKeyRef: {name, key}` asks the secret store named in the Component's
  `auth.secretStore`: `Get(key=name, metadata={"namespace": <component
  namespace or "">})`, then picks `data[key]`, or `data[name]` when `key` is
  empty. One Get per secret name per Component. A failure, or an empty value,
  is logged and leaves the item unresolved (an empty string); Init goes on.

Then, as daprd does for every value: each `{uuid}` becomes a fresh UUID, `{podName}` the
`POD_NAME` variable (unset: the Component cannot load), `{namespace}` `default.<app id>` (daprd's
self-hosted namespace), `{appID}` the app id. `envRef` applies only to an item with no `value`.

Values are never logged: only metadata names, secret names and store names.
"""

from __future__ import annotations

import logging
import os
import uuid
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


class SubstitutionError(ValueError):
    """A metadata value names something daprd would not start without (`{podName}` with no POD_NAME)."""


#: daprd's namespace when it runs self-hosted.
SELF_HOSTED_NAMESPACE = "default"


def substitute(name: str, value: str, *, app_id: str, pod_name: str | None) -> str:
    """daprd's placeholders in one metadata value (`name` is the item's, for the error)."""
    while "{uuid}" in value:
        value = value.replace("{uuid}", str(uuid.uuid4()), 1)
    if "{podName}" in value:
        if not pod_name:
            raise SubstitutionError(
                f"failed to parse metadata: property {name} refers to {{podName}} but podName is not set"
            )
        value = value.replace("{podName}", pod_name)
    value = value.replace("{namespace}", f"{SELF_HOSTED_NAMESPACE}.{app_id}")
    return value.replace("{appID}", app_id)


def env_ref_allowed(variable: str) -> bool:
    """Whether daprd would hand this environment variable to a component."""
    upper = variable.upper()
    return upper != "APP_API_TOKEN" and not upper.startswith("DAPR_")


async def resolve(
    component: Component,
    getter: SecretGetter | None,
    environ: Mapping[str, str] | None = None,
    *,
    app_id: str = "",
) -> Resolved:
    """Build the flat Init map for `component`, resolving references through `getter`.

    Raises `SubstitutionError` where daprd would refuse the Component.
    """
    env = os.environ if environ is None else environ
    out = await _references(component, getter, env)
    pod_name = env.get("POD_NAME")
    out.properties = {
        name: substitute(name, value, app_id=app_id, pod_name=pod_name) for name, value in out.properties.items()
    }
    return out


async def _references(component: Component, getter: SecretGetter | None, env: Mapping[str, str]) -> Resolved:
    out = Resolved()
    cache: dict[str, dict[str, str]] = {}
    failed: set[str] = set()
    for item in component.metadata:
        if item.env_ref and not item.value:
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
