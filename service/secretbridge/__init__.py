"""secretbridge: a Dapr pluggable secret store served over a Unix socket."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The one version is pyproject.toml's, as installed; a source tree that was never installed has none.
    __version__ = version("secretbridge")
except PackageNotFoundError:  # pragma: no cover - only outside an installed environment
    __version__ = "0+unknown"
