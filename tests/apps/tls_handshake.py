"""An app that takes its TLS client identity from the secret store, as any Dapr app would.

It reads one secret through the sidecar with the real dapr SDK (`DaprClient.get_secret`, request
metadata `format=pem`), hands the PEM to Python's `ssl` unchanged (one file: private key, leaf,
chain), connects to a TLS server that requires a client certificate, and prints what happened as
JSON. Nothing here knows which store, or which encoding the store keeps the certificate in.

    python tests/apps/tls_handshake.py STORE SECRET HOST:PORT SERVER_CA_FILE
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import tempfile
from pathlib import Path

from dapr.clients import DaprClient


def main() -> int:
    store, secret, address, server_ca = sys.argv[1:5]
    host, _, port = address.rpartition(":")
    with DaprClient() as client:
        data = dict(client.get_secret(store, secret, secret_metadata={"format": "pem"}).secret)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=server_ca)
    with tempfile.TemporaryDirectory() as folder:
        bundle = Path(folder) / "identity.pem"
        bundle.write_text(data[secret])
        bundle.chmod(0o600)
        context.load_cert_chain(str(bundle))
    with socket.create_connection((host, int(port)), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"hello\n")
        answer = tls.recv(1024).decode()
        peer = dict(item[0] for item in tls.getpeercert()["subject"])  # type: ignore[index]
        print(json.dumps({"answer": answer, "server": peer.get("commonName"), "version": tls.version()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
