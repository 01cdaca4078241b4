"""The `gateway` subcommand, registered on the main CLI's subparsers (and `python -m secretbridge.gateway`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from secretbridge.core.sockets import FOLDER_HELP, socket_folder
from secretbridge.gateway import NOT_DAPRD

DEFAULT_HTTP_PORT = 3500
DEFAULT_GRPC_PORT = 50001


def ensure_logging() -> None:
    # The main CLI normally configures logging; this covers `python -m secretbridge.gateway`.
    if not logging.getLogger().handlers:
        from secretbridge.core.logs import configure

        configure()


def run_gateway(args: argparse.Namespace) -> int:
    """Entry point of `secretbridge gateway`."""
    from secretbridge.gateway.runtime import Gateway, GatewayOptions

    ensure_logging()
    options = GatewayOptions(
        resources_paths=list(args.resources_path),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        config=args.config,
        socket_folder=str(socket_folder(args.socket_folder)),
        listen_address=args.listen_address,
        app_id=args.app_id,
    )
    return asyncio.run(Gateway(options).run())


def add_ports(parser: argparse.ArgumentParser) -> None:
    """The daprd-like --http-port, --grpc-port and --config flags (`gateway` and `dev`)."""
    parser.add_argument(
        "--http-port",
        type=int,
        default=DEFAULT_HTTP_PORT,
        help=f"HTTP port of the secrets API, like daprd's --dapr-http-port (default {DEFAULT_HTTP_PORT})",
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=DEFAULT_GRPC_PORT,
        help=f"gRPC port of the Dapr runtime API, like daprd's --dapr-grpc-port (default {DEFAULT_GRPC_PORT})",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="a Dapr Configuration YAML; its spec.secrets.scopes are enforced as daprd does",
    )


def add_gateway_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `gateway` and return its parser."""
    parser = subparsers.add_parser(
        "gateway",
        help="development stand-in for daprd's secrets API (NOT daprd)",
        description=NOT_DAPRD
        + " It reads Dapr Component YAMLs, discovers pluggable secret stores on the socket folder, "
        "calls Init per component, and serves GET /v1.0/secrets/... and the gRPC GetSecret/GetBulkSecret "
        "with daprd's shapes and status codes, so the dapr SDK works unchanged.",
    )
    parser.add_argument(
        "--resources-path",
        action="append",
        required=True,
        metavar="DIR",
        help="folder (or file) of Dapr Component YAMLs; may be repeated",
    )
    add_ports(parser)
    parser.add_argument(
        "--socket-folder",
        metavar="DIR",
        default=None,
        help=f"where pluggable component sockets live (default {FOLDER_HELP})",
    )
    parser.add_argument(
        "--listen-address",
        default="127.0.0.1",
        help="address the HTTP and gRPC ports bind to (default 127.0.0.1)",
    )
    parser.add_argument(
        "--app-id",
        default="",
        help="app ID used for Component `scopes:` (components scoped to other apps are not loaded)",
    )
    parser.set_defaults(func=run_gateway)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`python -m secretbridge.gateway`: the gateway without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="python -m secretbridge.gateway")
    add_gateway_parser(parser.add_subparsers(dest="command", prog="python -m secretbridge"))
    args = parser.parse_args(["gateway", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))
