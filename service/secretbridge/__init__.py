"""secretbridge: a Dapr pluggable secret store served over a Unix socket."""

__version__ = "0.1.0"
