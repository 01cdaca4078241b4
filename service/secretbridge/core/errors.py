"""The project's errors: what a store or the server says went wrong.

Stores raise these and know nothing of gRPC; the server maps each class to a
status code in one place (`server.STATUS_BY_ERROR`). A message names the
property, the secret and the cause, and never carries a secret value, a token
or an identity header: daprd shows callers only the message text.
"""

from __future__ import annotations


class SecretStoreError(Exception):
    """Base class; `message` is shown to daprd and the app as it is."""

    def __init__(self, message: str, *, cause: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: What kind of failure, when known ("dns", "refused", "tls", ... see `azure.causes`):
        #: for readiness and `secretbridge doctor`, which tell the user what to fix.
        self.cause = cause

    def __str__(self) -> str:
        return self.message


class NotFound(SecretStoreError):
    """The secret (or the version asked for) does not exist."""


class InvalidArgument(SecretStoreError):
    """A bad secret name, request metadata or component metadata value."""


class PermissionDenied(SecretStoreError):
    """The store refused: the identity lacks rights, or a name is denied here."""


class IdentityRefused(PermissionDenied):
    """The identity itself was refused (the vault answered 401 to its token, or the token endpoint
    refused it): a problem of the identity, not a decision about any one secret."""


class FailedPrecondition(SecretStoreError):
    """The request cannot be served in the current state (not initialised,
    disabled or expired secret, unusable resource named in metadata)."""


class Unavailable(SecretStoreError):
    """The backend cannot be reached, or is throttled past the retries."""


class DeadlineExceeded(SecretStoreError):
    """The backend did not answer within `requestTimeout`."""


class ResourceExhausted(SecretStoreError):
    """Too much at once: this instance already holds its share of the server (calls waiting on its
    backend), or an answer is larger than the caller accepts (daprd reads at most 4 MiB)."""


def decides_about_secret(err: SecretStoreError) -> bool:
    """Whether `err` is the backend's decision about the secret itself, so a value held for it must
    not be served again: deleted (NotFound), disabled or expired (FailedPrecondition), or access to
    it revoked (PermissionDenied: an operator who removes a grant means it to take effect, and
    serving the old value until maxStale would defeat that). An identity that cannot get or use a
    token (`IdentityRefused`), an unreachable, slow or throttled backend are not: held values are
    served through them, within maxStale."""
    if isinstance(err, IdentityRefused):
        return False
    return isinstance(err, NotFound | FailedPrecondition | PermissionDenied)
