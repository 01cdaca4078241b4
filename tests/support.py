"""Test helpers: a real secretbridge server on a real Unix socket, and a real gRPC client for it."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc
from secretbridge.core.policy import OperatorPolicy
from secretbridge.proto.components.v1 import common_pb2, secretstore_pb2, secretstore_pb2_grpc
from secretbridge.runtime.server import SecretBridgeServer, ServerOptions

#: What the tests' operator allows: the HTTPS fakes in tests/fakes listen on 127.0.0.1.
TEST_POLICY = OperatorPolicy(vault_hosts=frozenset({("127.0.0.1", None)}))
#: The same, for a `secretbridge serve` child process.
TEST_ALLOW_ENV = {"SECRETBRIDGE_ALLOW_VAULT_HOSTS": "127.0.0.1"}


def short_tempdir(prefix: str = "sb-") -> Path:
    """A temp folder with a short path: a Unix socket path must fit in 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class Bridge:
    """Talks to a secretbridge socket exactly as daprd does: one channel, the instance in a header."""

    def __init__(self, socket_path: Path, server: SecretBridgeServer | None = None) -> None:
        self.socket_path = socket_path
        self.server = server
        self.channel = grpc.insecure_channel(
            f"unix://{socket_path}",
            options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
        )
        self.stub = secretstore_pb2_grpc.SecretStoreStub(self.channel)

    @staticmethod
    def _headers(instance: str | None) -> list[tuple[str, str]]:
        return [("x-component-instance", instance)] if instance is not None else []

    def init(self, metadata: Mapping[str, str], instance: str | None = "default", timeout: float = 30) -> None:
        request = secretstore_pb2.SecretStoreInitRequest(
            metadata=common_pb2.MetadataRequest(properties=dict(metadata))
        )
        self.stub.Init(request, metadata=self._headers(instance), timeout=timeout)

    def features(self, instance: str | None = "default") -> list[str]:
        reply = self.stub.Features(common_pb2.FeaturesRequest(), metadata=self._headers(instance), timeout=30)
        return list(reply.features)

    def get(
        self, key: str, metadata: Mapping[str, str] | None = None, instance: str | None = "default",
        timeout: float = 60,
    ) -> dict[str, str]:
        request = secretstore_pb2.GetSecretRequest(key=key, metadata=dict(metadata or {}))
        return dict(self.stub.Get(request, metadata=self._headers(instance), timeout=timeout).data)

    def bulk_get(
        self, metadata: Mapping[str, str] | None = None, instance: str | None = "default", timeout: float = 60
    ) -> dict[str, dict[str, str]]:
        request = secretstore_pb2.BulkGetSecretRequest(metadata=dict(metadata or {}))
        reply = self.stub.BulkGet(request, metadata=self._headers(instance), timeout=timeout)
        return {name: dict(entry.secrets) for name, entry in reply.data.items()}

    def ping(self, instance: str | None = "default") -> None:
        self.stub.Ping(common_pb2.PingRequest(), metadata=self._headers(instance), timeout=10)

    def close(self) -> None:
        self.channel.close()


@contextmanager
def serve_bridge(name: str = "secretbridge", folder: Path | None = None, **options: object) -> Iterator[Bridge]:
    """An in-process server, and a client for it, on a fresh socket folder (removed after) or on
    `folder` (kept: serving on it again is a restart); it allows the fakes' host unless `policy=`
    says otherwise."""
    options.setdefault("policy", TEST_POLICY)
    owned = folder is None
    folder = short_tempdir() if folder is None else folder
    server = SecretBridgeServer(ServerOptions(socket_folder=folder, name=name, http_port=None, **options))  # type: ignore[arg-type]
    server.start()
    bridge = Bridge(server.socket_path, server)
    try:
        yield bridge
    finally:
        bridge.close()
        server.stop()
        if owned:
            shutil.rmtree(folder, ignore_errors=True)


def eventually(check: Callable[[], bool], within: float = 5.0) -> bool:
    """Poll `check` until it holds or `within` seconds pass (a bound for a busy machine, not a timing)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


class MovedClock:
    """The monotonic clock plus an offset the test moves forward: TTLs are crossed, not slept through."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def move_time(bridge: Bridge, instance: str = "default", *, resolver: bool = False) -> MovedClock:
    """Give an initialised instance's cache (or its Key Vault reference resolver's) a clock the test
    moves, and no TTL jitter; the server runs in this process."""
    assert bridge.server is not None
    found = bridge.server.instances.find(instance)
    assert found is not None
    cache = found.resolver if resolver else found.cached
    assert cache is not None
    clock = MovedClock()
    cache.clock = clock
    cache.random = lambda: 0.0  # no TTL jitter: deadlines exactly as cacheTTL says
    return clock
