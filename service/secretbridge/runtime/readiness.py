"""What `/readyz` answers: can this sidecar serve?

Readiness must not take the pod out of service while it can still answer. Ready means the
socket is bound and every instance that counts can serve: its backend answers, or its cache
holds values within maxStale. Which instances count, and for how long one that cannot serve
holds readiness back, is `Instance.health`'s rule under a `ReadinessPolicy`. Backend health
itself goes to the `secretbridge_backend_up` metric and to the verbose form, whose causes
carry no secret value, token or client id (`safe_cause`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secretbridge.azure.causes import health_verdict
from secretbridge.azure.redaction import redact
from secretbridge.runtime.instances import Instances

#: An instance that cannot serve holds readiness back this long (`--ready-grace`).
READY_GRACE = 60.0
#: An instance not called for this long no longer counts in readiness (`--idle-after`).
IDLE_AFTER = 3600.0

_GUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")


@dataclass(frozen=True)
class ReadinessPolicy:
    """`--ready-grace` and `--idle-after`."""

    grace: float = READY_GRACE
    idle_after: float = IDLE_AFTER


def _verdict(health: Any) -> str:
    if health.backend_up is not False:
        return "ok"
    return str(health_verdict(health.cause or None)[1] or "other")


def safe_cause(text: str) -> str:
    """A cause fit for a readiness answer: no token, identity header, configured secret or client id."""
    return _GUID.sub("[redacted id]", redact(text))


def readiness(
    instances: Instances, policy: ReadinessPolicy, *, socket: Path, bound: bool, verbose: bool = False
) -> tuple[bool, dict[str, Any]]:
    """(ready, body): body maps each instance to its state word, or (verbose) to its health in full."""
    now = instances.clock()
    ready = bound
    states: dict[str, Any] = {}
    for instance in instances.all():
        health = instance.health(now, grace=policy.grace, idle_after=policy.idle_after)
        remote = instance.cached if instance.cached is not None else instance.resolver
        if remote is not None:
            remote.keep_watch()  # health follows the backend even when no app reads
        if health.holds_back:
            ready = False
        name = instance.name or "(default)"
        if not verbose:
            states[name] = health.state
            continue
        states[name] = {
            "state": health.state,
            "backend": instance.backend,
            "can_serve": health.can_serve,
            "counted": health.counted,
            "idle": health.idle,
            "backend_up": health.backend_up,
            "recovered": instance.recovered,
            "cause": safe_cause(health.cause),
            # The doctor's word for the backend's last failure (dns, refused, tls, forbidden-rbac, ...).
            "verdict": _verdict(health),
        }
    for name in instances.recovering():
        states[name or "(default)"] = "recovering" if not verbose else {
            "state": "recovering", "counted": True, "cause": "being opened again after a restart"}
        ready = False
    for name, reason in instances.unrecovered().items():
        # Only daprd can fix it (a new Init): readiness cannot, so it does not count.
        states[name or "(default)"] = "needs Init" if not verbose else {
            "state": "needs Init", "counted": False, "cause": safe_cause(reason)}
    body: dict[str, Any] = {"instances": states}
    if verbose:
        body["socket"] = {"path": str(socket), "bound": bound}
    elif not bound:
        body["socket"] = "not bound"
    return ready, body
