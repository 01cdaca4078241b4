"""The data every scenario agrees on, so a bridge reply and an echo reply are the same size."""

from __future__ import annotations

#: The gRPC metadata key naming the Component instance (as daprd sends it).
INSTANCE_HEADER = "x-component-instance"
#: The instance name the benchmarks initialise.
INSTANCE = "bench"
#: Length of every secret value: a typical generated password or connection token.
VALUE_LENGTH = 40
#: The secret the echo servers pretend to return; same name length as the hot secrets.
ECHO_KEY = "hot-secret-0000"


def secret_name(prefix: str, index: int) -> str:
    """`hot-secret-0042`: fixed width so every reply has the same size."""
    return f"{prefix}-{index:04d}" if index < 10_000 else f"{prefix}-{index}"


def hot_names(count: int) -> list[str]:
    """The hot secrets the cached-Get and hot-read scenarios ask for."""
    return [secret_name("hot-secret", i) for i in range(count)]


def secret_value(name: str) -> str:
    """A deterministic value of `VALUE_LENGTH` characters (letters and digits only)."""
    seed = f"{name}-value-".replace("-", "x")
    return (seed * (VALUE_LENGTH // len(seed) + 1))[:VALUE_LENGTH]
