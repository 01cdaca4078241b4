"""Scrubbing tokens, the identity header and configured secrets out of text before it reaches a
message or a log line."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from secretbridge.core.metadata import ParsedMetadata

_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
_TOKEN_FIELD = re.compile(
    r"""(["']?(?:access_token|refresh_token|id_token|client_secret|client_assertion)["']?\s*[:=]\s*["']?)"""
    r"""[^"'\s,&}]+""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(Bearer\s+)[\w.~+/=-]+", re.IGNORECASE)
_MAX_CAUSE = 300


def redact(text: str, metadata: ParsedMetadata | None = None, environ: Mapping[str, str] | None = None) -> str:
    """`text` with tokens, the identity header and configured secrets replaced by `[redacted]`."""
    env = os.environ if environ is None else environ
    secrets = [env.get("IDENTITY_HEADER"), env.get("MSI_SECRET"), env.get("AZURE_CLIENT_SECRET"),
               env.get("AZURE_CLIENT_CERTIFICATE_PASSWORD")]
    if metadata is not None:
        secrets += [metadata.get("azureClientSecret"), metadata.get("azureCertificatePassword"),
                    metadata.get("azureCertificate")]
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = _JWT.sub("[redacted]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    return _TOKEN_FIELD.sub(r"\1[redacted]", text)


def safe_cause(exc: BaseException, metadata: ParsedMetadata | None = None) -> str:
    """`"<ExceptionClass>: <first part of its message>"`, scrubbed by `redact`, on one line."""
    text = " ".join(str(exc).split())
    text = redact(text, metadata)
    if len(text) > _MAX_CAUSE:
        text = text[:_MAX_CAUSE] + "…"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
