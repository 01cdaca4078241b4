"""Scrubbing tokens, the identity header and configured secrets out of text before it reaches a
message or a log line.

The Azure SDK logs too: azure-identity warns with the token endpoint's error text, which a verbose
endpoint or a proxy's error page may fill with what it received. `scrub_azure_logs` makes every
record of an `azure.*` logger pass through `redact`, with the client secrets and certificate
passwords of every credential built so far (`remember`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from secretbridge.core.metadata import ParsedMetadata

_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
_TOKEN_FIELD = re.compile(
    r"""(["']?(?:access_token|refresh_token|id_token|client_secret|client_assertion)["']?\s*[:=]\s*["']?)"""
    r"""[^"'\s,&}]+""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(Bearer\s+)[\w.~+/=-]+", re.IGNORECASE)
# `scheme://user:password@host` (or a token as the user): the userinfo is a credential.
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@'\"]+@")
# Query parameters that carry credentials: SAS signatures, passwords, keys, codes.
_URL_SECRET_PARAM = re.compile(
    r"([?&](?:sig|signature|password|passwd|pwd|secret|token|access_token|api[-_]?key|key|code)=)[^&#\s'\"]+",
    re.IGNORECASE,
)
_MAX_CAUSE = 300
#: The properties that hold a secret: an inline certificate holds its private key.
_SECRET_PROPERTIES = ("azureClientSecret", "azureCertificatePassword", "azureCertificate")
#: Secrets of the credentials built in this process, scrubbed from the Azure SDK's log records.
_remembered: set[str] = set()
_lock = threading.Lock()
_installed = False


def redact(text: str, metadata: ParsedMetadata | None = None, environ: Mapping[str, str] | None = None) -> str:
    """`text` with tokens, the identity header, configured secrets and the credentials in URLs
    (`https://user:pw@host`, `?sig=...`) replaced by `[redacted]`."""
    env = os.environ if environ is None else environ
    secrets = [env.get("IDENTITY_HEADER"), env.get("MSI_SECRET"), env.get("AZURE_CLIENT_SECRET"),
               env.get("AZURE_CLIENT_CERTIFICATE_PASSWORD")]
    if metadata is not None:
        secrets += [metadata.get(name) for name in _SECRET_PROPERTIES]
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = _JWT.sub("[redacted]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    text = _URL_USERINFO.sub(r"\1[redacted]@", text)
    text = _URL_SECRET_PARAM.sub(r"\1[redacted]", text)
    return _TOKEN_FIELD.sub(r"\1[redacted]", text)


def safe_cause(exc: BaseException, metadata: ParsedMetadata | None = None) -> str:
    """`"<ExceptionClass>: <first part of its message>"`, scrubbed by `redact`, on one line."""
    text = " ".join(str(exc).split())
    text = redact(text, metadata)
    if len(text) > _MAX_CAUSE:
        text = text[:_MAX_CAUSE] + "…"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def remember(metadata: ParsedMetadata) -> None:
    """Scrub this Component's client secret and certificate password from the Azure SDK's logs."""
    with _lock:
        _remembered.update(v for v in (metadata.get(n) for n in _SECRET_PROPERTIES) if v and len(v) >= 4)


def scrub_azure_logs() -> None:
    """Redact every log record of an `azure.*` logger as it is made (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if record.name == "azure" or record.name.startswith("azure."):
            text = record.getMessage()
            with _lock:
                configured = list(_remembered)
            for secret in configured:
                text = text.replace(secret, "[redacted]")
            record.msg, record.args = redact(text), None
            if isinstance(record.exc_info, tuple):
                # The traceback repeats the text; keep the class only.
                exc = record.exc_info[1]
                record.exc_info, record.exc_text = None, None
                record.msg += f" ({type(exc).__name__})" if exc is not None else ""
        return record

    logging.setLogRecordFactory(factory)
