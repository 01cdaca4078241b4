"""`secretbridge gateway`: a development stand-in for daprd's secrets API only.

It is NOT daprd. It reads Dapr Component (and Configuration) YAMLs, discovers
pluggable secret stores on a socket folder the way daprd does, initialises one
gRPC channel per component, and serves the secrets API over HTTP
(`/v1.0/secrets/...`) and gRPC (`dapr.proto.runtime.v1.Dapr` GetSecret and
GetBulkSecret) with daprd's shapes and status codes, so the real `dapr` SDK
works unchanged against it on a laptop or in CI. Production uses daprd.

Modules, one concern each:

- `components`: load Component and Configuration documents from YAML.
- `scopes`: daprd's secret-scope decision.
- `discovery`: find pluggable secret stores on the socket folder (reflection v1alpha).
- `client`: one component instance over its own channel (Init, Features, Get, BulkGet).
- `refs`: resolve `secretKeyRef` / `envRef` metadata before Init.
- `secrets`: the transport-neutral secrets API (daprd's "universal" layer) and its errors.
- `http_api`, `grpc_api`: the two transports.
- `runtime`: load everything, serve, stop cleanly.
- `cli`: the `gateway` and `dev` subcommands.
"""

from __future__ import annotations

#: Said at start-up and in `--help`, so nobody mistakes this for the real runtime.
NOT_DAPRD = (
    "secretbridge gateway is NOT daprd: it implements only Dapr's secrets API "
    "(HTTP /v1.0/secrets and gRPC GetSecret/GetBulkSecret), for development and CI. "
    "Production uses daprd."
)
