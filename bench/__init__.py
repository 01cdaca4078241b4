"""secretbridge benchmarks: `make bench` (or `python -m bench`), never part of `make test`.

Every number is printed next to a baseline measured in the same run (a bare
echo server, the sequential lower bound, the reads the app made), because the
machines these run on are noisy; only the issue's targets are constants.

Modules, one concern each:

- `workload`: the names, values and sizes every scenario agrees on.
- `vault`: the Key Vault and managed-identity test doubles, set up for child processes.
- `servers`: the bare echo baselines and the grpc.aio variant of secretbridge (run as processes).
- `procs`: starting, probing and stopping server processes; reading their RSS and CPU.
- `load`: the gRPC load generator, run in its own process.
- `scenarios`: the four measurements of issue 5 item 8.
- `report`: the table, the PASS/FAIL lines and the JSON file.
"""
