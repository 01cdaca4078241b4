"""The `secretbridge` command: `serve` (the component), `check` and `doctor` (diagnosis),
`backends` (metadata docs), and the development `gateway` and `dev` commands."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from secretbridge import __version__
from secretbridge.core.errors import SecretStoreError
from secretbridge.core.logs import configure
from secretbridge.core.sockets import FOLDER_HELP

log = logging.getLogger("secretbridge")


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal file mode such as 0666") from None


def _serve(args: argparse.Namespace) -> int:
    from secretbridge.core.sockets import socket_folder
    from secretbridge.runtime.server import SecretBridgeServer, ServerOptions

    options = ServerOptions(
        socket_folder=socket_folder(args.socket_folder),
        name=args.name,
        socket_mode=args.socket_mode,
        workers=args.workers,
        http_host=args.http_host,
        http_port=None if args.http_port < 0 else args.http_port,
    )
    server = SecretBridgeServer(options)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except SecretStoreError as err:
        log.error("cannot start", extra={"cause": err.message})
        server.stop()
        return 1
    while not stopping.wait(1.0):
        pass
    server.stop()
    return 0


def _backends(args: argparse.Namespace) -> int:
    from secretbridge.tools.docs import backends_text

    print(backends_text(markdown=args.markdown), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from secretbridge.tools.check import check_paths

    findings = check_paths([Path(p) for p in args.paths], args.name)
    if not findings:
        print(f"no Component of type secretstores.{args.name} found in {', '.join(args.paths)}")
        return 1
    for finding in findings:
        status = "FAIL" if finding.errors else "ok"
        print(f"{status:<4}  {finding.source}: {finding.component}")
        for line in finding.errors:
            print(f"      error: {line}")
        for line in finding.warnings:
            print(f"      warning: {line}")
    return 1 if any(f.errors for f in findings) else 0


def _doctor(args: argparse.Namespace) -> int:
    from pathlib import Path

    from secretbridge.tools.doctor import DoctorOptions, run

    options = DoctorOptions(
        resources=[Path(p) for p in args.resources_path or []],
        socket=Path(args.socket) if args.socket else None,
        secret=args.secret,
        name=args.name,
        timeout=args.timeout,
    )
    return run(options, as_json=args.json)


def _migrate(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from secretbridge.tools.migrate import migrate_paths, report_lines

    results = migrate_paths([Path(p) for p in args.paths], args.name)
    if not results:
        print(f"no YAML file found in {', '.join(args.paths)}", file=sys.stderr)
        return 1
    # Without --write the rewritten YAML goes to stdout (redirect it to a file) and the report to stderr.
    report = sys.stdout if args.write else sys.stderr
    for result in results:
        for line in report_lines(result):
            print(line, file=report)
        if result.text is None:
            continue
        if args.write:
            result.path.write_text(result.text, encoding="utf-8")
            print(f"  rewritten: {result.path}", file=report)
        else:
            if len(results) > 1:
                print(f"# --- {result.path}")
            print(result.text, end="")
    return 1 if any(r.error for r in results) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secretbridge",
        description="A Dapr pluggable secret store: Azure Key Vault, the Container Apps secret set, or local files.",
    )
    parser.add_argument("--version", action="version", version=f"secretbridge {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format", default="auto", choices=["auto", "json", "text"],
        help="JSON lines, or text; auto picks text on a terminal",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the secret store to daprd on a Unix socket")
    serve.add_argument(
        "--socket-folder",
        help=f"folder for the socket (default: {FOLDER_HELP})",
    )
    serve.add_argument(
        "--name", default="secretbridge",
        help="socket name; the Component type is secretstores.<name> (default secretbridge)",
    )
    serve.add_argument(
        "--socket-mode", type=_octal, default=0o666,
        help="file mode of the socket; daprd runs as another user, so the default lets others connect (0666)",
    )
    serve.add_argument("--workers", type=int, default=16, help="gRPC worker threads (default 16)")
    serve.add_argument("--http-host", default="0.0.0.0", help="address for /metrics, /healthz, /readyz")
    serve.add_argument(
        "--http-port", type=int, default=8081,
        help="port for /metrics, /healthz, /readyz (default 8081; 0 picks a free one; -1 turns it off)",
    )
    serve.set_defaults(func=_serve)

    check = sub.add_parser(
        "check", help="validate Component YAMLs offline (metadata names, types, required properties)"
    )
    check.add_argument("paths", nargs="+", help="YAML files, or folders of them")
    check.add_argument("--name", default="secretbridge", help="the socket name: checks type secretstores.<name>")
    check.set_defaults(func=_check)

    doctor = sub.add_parser(
        "doctor", help="walk identity, token, DNS, TCP, TLS, permissions, the volume and the socket; print fixes"
    )
    doctor.add_argument("--resources-path", action="append", metavar="DIR",
                        help="Component YAMLs (a file or folder; repeatable), as daprd's --resources-path")
    doctor.add_argument("--socket", metavar="PATH", help="a running server's socket, e.g. "
                        "/tmp/dapr-components-sockets/secretbridge.sock")
    doctor.add_argument("--secret", metavar="NAME", help="the secret to read (default: the first one listed)")
    doctor.add_argument("--name", default="secretbridge", help="the socket name: checks type secretstores.<name>")
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds for each network step (default 5)")
    doctor.add_argument("--json", action="store_true", help="print the steps as JSON, for automation")
    doctor.set_defaults(func=_doctor)

    migrate = sub.add_parser(
        "migrate",
        help="rewrite Components of secretstores.azure.keyvault, local.file and local.env into secretbridge "
        "Components, reporting every difference that applies",
    )
    migrate.add_argument("paths", nargs="+", help="YAML files, or folders of them")
    migrate.add_argument("--write", action="store_true", help="rewrite the files in place (default: print)")
    migrate.add_argument("--name", default="secretbridge", help="the socket name: writes type secretstores.<name>")
    migrate.set_defaults(func=_migrate)

    backends = sub.add_parser("backends", help="list the backends and the metadata each understands")
    backends.add_argument("--markdown", action="store_true", help="print the reference tables in Markdown")
    backends.set_defaults(func=_backends)

    from secretbridge.dev import add_dev_parser
    from secretbridge.gateway.cli import add_gateway_parser

    add_gateway_parser(sub)
    add_dev_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(args.log_level, args.log_format)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
