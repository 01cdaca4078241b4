"""`make soak`: a fault soak of secretbridge with the project's doubles (issue 21, point 6), never in `make test`.

One `secretbridge serve` with instances `keyvault` (on the HTTPS vault double), `file` and
`containerapps`; 64 callers reading at random over its socket, and an app reading through the real
daprd. Phases cycle: steady, vault down (503), vault hung, vault throttled (429 + Retry-After),
identity endpoint down, a rotation during an outage, a deletion and a disabled secret, file
rewrites and volume swaps, and (in the first cycle) a `kill -9` and restart of secretbridge.

Modules: `faults` (the switches and the local stores' writers), `callers` (the readers' process),
`run` (the phases), `analysis` (figures, verdicts, table); `python -m bench.soak --help`.
"""
