"""What the operator allowed when starting `serve`: powers a Component's metadata cannot grant itself.

Whoever can drive the socket can write any Component metadata, so anything that would let metadata
reach past the sidecar's normal bounds (send the identity's token to a host outside Azure, relax
the Key Vault challenge check, read bigger files) is decided here, once, at start-up. The runtime
hands the policy to each backend at Init as plain data; a backend never reads flags or the
environment itself, and never imports the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A host the operator listed, with the one port allowed (None: any port).
HostPort = tuple[str, "int | None"]

#: The flag and the variable that list vault hosts outside Azure (named in every refusal).
ALLOW_VAULT_HOST_FLAG = "--allow-vault-host"
ALLOW_VAULT_HOSTS_ENV = "SECRETBRIDGE_ALLOW_VAULT_HOSTS"
ALLOW_VAULT_HOSTS_SETTING = f"{ALLOW_VAULT_HOST_FLAG} / {ALLOW_VAULT_HOSTS_ENV}"

#: The largest `secretsFile` read (a YAML file of thousands of secrets is well under 1 MiB).
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024
#: The most bytes one BulkGet reads from a secret volume (Container Apps allows 100 secrets per app).
DEFAULT_MAX_VOLUME_BYTES = 64 * 1024 * 1024
#: `serve --workers`: gRPC worker threads. A waiting thread costs little, and a slow instance's
#: share (seven eighths, 56) still leaves 8 for everyone else's hits.
DEFAULT_WORKERS = 64


@dataclass(frozen=True)
class OperatorPolicy:
    """The operator's settings for every instance this process serves.

    The default is the strict one: Azure's Key Vault hosts only, default size caps.
    """

    #: Vault hosts outside Azure (emulators, test doubles) the identity's token may be sent to.
    vault_hosts: frozenset[HostPort] = frozenset()
    #: The largest single file a file backend reads (`secretsFile`, one volume file).
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    #: The most bytes one scan of a secret volume reads in total.
    max_volume_bytes: int = DEFAULT_MAX_VOLUME_BYTES


#: The policy when nothing was said: what a backend built without one gets.
STRICT = OperatorPolicy()
