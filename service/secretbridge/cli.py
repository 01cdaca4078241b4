"""The `secretbridge` command: `serve` (the component), `check` and `doctor` (diagnosis),
`backends` (metadata docs), and the development `gateway` and `dev` commands."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from secretbridge import __version__
from secretbridge.core.errors import SecretStoreError
from secretbridge.core.logs import configure
from secretbridge.core.policy import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_VOLUME_BYTES,
    DEFAULT_WORKERS,
    OperatorPolicy,
)
from secretbridge.core.sockets import FOLDER_HELP

log = logging.getLogger("secretbridge")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (the cause and the flag), not usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _octal(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal file mode such as 0660") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file mode from 0000 to 0777")
    return mode


def _group(text: str) -> int:
    import grp

    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no group named {text!r} on this host (give a name or a gid)") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -2
    if not -1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535, 0 picks one, -1 turns it off)")
    return value


def _vault_host(text: str) -> str:
    from secretbridge.azure.hosts import parse_vault_hosts

    try:
        parse_vault_hosts([text])
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def operator_policy(args: argparse.Namespace) -> OperatorPolicy:
    """The operator's policy from the flags and `SECRETBRIDGE_ALLOW_VAULT_HOSTS` (both add hosts)."""
    from secretbridge.azure.hosts import operator_vault_hosts

    try:
        hosts = operator_vault_hosts(args.allow_vault_host)
    except ValueError as err:
        raise SecretStoreError(str(err)) from None
    return OperatorPolicy(
        vault_hosts=hosts,
        max_file_bytes=getattr(args, "max_file_bytes", DEFAULT_MAX_FILE_BYTES),
        max_volume_bytes=getattr(args, "max_volume_bytes", DEFAULT_MAX_VOLUME_BYTES),
    )


def _duration(text: str) -> float:
    from secretbridge.core.metadata import parse_duration

    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 5m or 1h") from None


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from secretbridge.core.sockets import socket_folder
    from secretbridge.runtime.server import SecretBridgeServer, ServerOptions

    try:
        policy = operator_policy(args)
    except SecretStoreError as err:
        log.error("cannot start", extra={"cause": err.message})
        return 2
    options = ServerOptions(
        socket_folder=socket_folder(args.socket_folder),
        name=args.name,
        socket_mode=args.socket_mode,
        socket_group=args.socket_group,
        workers=args.workers,
        http_host=args.http_host,
        http_port=None if args.http_port < 0 else args.http_port,
        policy=policy,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        keep_state=not args.no_state,
        max_instances=args.max_instances,
        ready_grace=args.ready_grace,
        idle_after=args.idle_after,
    )
    for host, port in sorted(policy.vault_hosts, key=str):
        log.warning(
            "the operator allows a vault host outside Azure: the identity's token may be sent there",
            extra={"host": host, "port": port if port is not None else "any"},
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
        return 1
    except OSError as err:  # one the start-up checks did not foresee: still one line, not a traceback
        log.error("cannot start", extra={"cause": f"{type(err).__name__}: {err}"})
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

    try:
        policy = operator_policy(args)
    except SecretStoreError as err:
        print(f"secretbridge check: {err.message}", file=sys.stderr)
        return 2
    findings = check_paths([Path(p) for p in args.paths], args.name, policy)
    if not findings:
        print(f"no Component of type secretstores.{args.name} found in {', '.join(args.paths)}")
        return 1
    for finding in findings:
        print("\n".join(finding.lines()))
    return 1 if any(f.errors for f in findings) else 0


def _doctor(args: argparse.Namespace) -> int:
    from pathlib import Path

    from secretbridge.tools.doctor import DoctorOptions, run

    try:
        policy = operator_policy(args)
    except SecretStoreError as err:
        print(f"secretbridge doctor: {err.message}", file=sys.stderr)
        return 2
    options = DoctorOptions(
        policy=policy,
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
    parser = _Parser(
        prog="secretbridge",
        description="A Dapr pluggable secret store: Azure Key Vault, the Container Apps secret set, or local files.",
    )
    parser.add_argument("--version", action="version", version=f"secretbridge {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format", default="auto", choices=["auto", "json", "text"],
        help="JSON lines, or text; auto picks text on a terminal",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
        "--socket-mode", type=_octal, default=0o660,
        help="file mode of the socket (default 0660: this user and the socket's group; whoever connects can "
             "initialise instances and read their secrets; 0666 opens it to every local user and is logged)",
    )
    serve.add_argument(
        "--socket-group", type=_group, default=None, metavar="NAME|GID",
        help="group of the socket, shared with daprd (default: this process's group)",
    )
    serve.add_argument(
        "--allow-vault-host", action="append", default=[], type=_vault_host, metavar="HOST[:PORT]",
        help="a vault host outside Azure (an emulator) that vaultUri, Key Vault references and "
             "disableChallengeResourceVerification may name; repeatable; a bare HOST allows every port. "
             "Also read from $SECRETBRIDGE_ALLOW_VAULT_HOSTS (comma-separated)",
    )
    serve.add_argument(
        "--max-file-bytes", type=_positive, default=DEFAULT_MAX_FILE_BYTES, metavar="BYTES",
        help=f"largest secrets file or volume file read (default {DEFAULT_MAX_FILE_BYTES})",
    )
    serve.add_argument(
        "--max-volume-bytes", type=_positive, default=DEFAULT_MAX_VOLUME_BYTES, metavar="BYTES",
        help=f"most bytes one scan of a secret volume reads (default {DEFAULT_MAX_VOLUME_BYTES})",
    )
    serve.add_argument(
        "--workers", type=_positive, default=DEFAULT_WORKERS,
        help=f"gRPC worker threads (default {DEFAULT_WORKERS}); one instance may hold at most seven eighths of them",
    )
    serve.add_argument("--http-host", default="0.0.0.0", help="address for /metrics, /healthz, /readyz")
    serve.add_argument(
        "--http-port", type=_port, default=8081,
        help="port for /metrics, /healthz, /readyz (default 8081; 0 picks a free one; -1 turns it off)",
    )
    serve.add_argument(
        "--state-dir",
        help="folder (owner-only) where each instance's Init metadata is kept so instances survive a restart "
        "of secretbridge; never holds a secret-bearing property (default: <socket folder>/.secretbridge-state/<name>)",
    )
    serve.add_argument(
        "--no-state", action="store_true",
        help="keep nothing: after a restart every instance needs a new Init, which daprd sends only when it restarts",
    )
    serve.add_argument(
        "--max-instances", type=_positive, default=256,
        help="the most instances (Components) served at once; daprd never says when one is removed (default 256)",
    )
    serve.add_argument(
        "--ready-grace", type=_duration, default=60.0,
        help="how long an instance that cannot serve keeps /readyz at 503 (default 60s; see README)",
    )
    serve.add_argument(
        "--idle-after", type=_duration, default=3600.0,
        help="an instance not called for this long no longer counts in /readyz (default 1h)",
    )
    serve.set_defaults(func=_serve)

    check = sub.add_parser(
        "check", help="validate Component YAMLs offline as Init would (folders recursed; every problem reported)"
    )
    check.add_argument("paths", nargs="+", help="YAML files, or folders of them")
    check.add_argument("--name", default="secretbridge", help="the socket name: checks type secretstores.<name>")
    check.add_argument(
        "--allow-vault-host", action="append", default=[], type=_vault_host, metavar="HOST[:PORT]",
        help="check as a serve started with this --allow-vault-host would (also $SECRETBRIDGE_ALLOW_VAULT_HOSTS)",
    )
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
    doctor.add_argument(
        "--allow-vault-host", action="append", default=[], type=_vault_host, metavar="HOST[:PORT]",
        help="diagnose as a serve started with this --allow-vault-host would (also $SECRETBRIDGE_ALLOW_VAULT_HOSTS)",
    )
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
