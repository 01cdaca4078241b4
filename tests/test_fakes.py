"""The fakes behave like the real services, as seen by the real azure SDK (sync and async).

If these pass, a keyvault-store test that fails is about the store, not the fake.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from collections.abc import Iterator

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.identity import ManagedIdentityCredential
from azure.identity.aio import ManagedIdentityCredential as AsyncManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._shared import http_challenge_cache
from azure.keyvault.secrets.aio import SecretClient as AsyncSecretClient

from tests.fakes import IDENTITY_ENV_VARS, FakeKeyVault, FakeManagedIdentity, TestCertificates
from tests.support import eventually


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return TestCertificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeManagedIdentity]:
    for name in IDENTITY_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    with FakeManagedIdentity() as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        yield fake


@pytest.fixture
def vault(certs: TestCertificates, identity: FakeManagedIdentity) -> Iterator[FakeKeyVault]:
    # The SDK caches challenges per host:port for the whole process; a port the OS hands out
    # again must not inherit an earlier test's challenge.
    http_challenge_cache.clear()
    with FakeKeyVault(certs, identity=identity) as fake:
        yield fake


def sync_client(vault: FakeKeyVault, certs: TestCertificates, **kwargs: object) -> SecretClient:
    return SecretClient(
        vault.url, ManagedIdentityCredential(**kwargs),  # type: ignore[arg-type]
        connection_verify=str(certs.ca_path), verify_challenge_resource=False,
    )


def async_client(vault: FakeKeyVault, certs: TestCertificates, credential: object = None,
                 **kwargs: object) -> AsyncSecretClient:
    return AsyncSecretClient(
        vault.url, credential or AsyncManagedIdentityCredential(),  # type: ignore[arg-type]
        connection_verify=str(certs.ca_path), verify_challenge_resource=False, **kwargs,
    )


def test_sync_get_latest_and_version_with_one_challenge(
    vault: FakeKeyVault, certs: TestCertificates, identity: FakeManagedIdentity
) -> None:
    first = vault.set_secret("db-password", "v-one")
    vault.set_secret("db-password", "v-two", content_type="text/plain")
    client = sync_client(vault, certs)
    latest = client.get_secret("DB-Password")  # names are case-insensitive
    assert latest.value == "v-two"
    assert latest.properties.content_type == "text/plain"
    assert len(latest.properties.version) == 32
    assert client.get_secret("db-password", first).value == "v-one"
    assert vault.count("challenge") == 1
    assert vault.count("get") == 2  # requests that got past authentication
    assert vault.count("total") == 3  # the challenged request is sent again with the token
    assert len(identity.requests) == 1
    request = identity.requests[0]
    assert request.style == "appservice" and request.resource == "https://vault.azure.net"
    assert not request.user_assigned
    paths = [path for _, path, _ in vault.log]
    assert paths[0] == "/secrets/DB-Password/"  # the SDK asks for latest with a trailing slash
    assert all("api-version" in query for _, _, query in vault.log)


def test_user_assigned_client_id_reaches_the_token_endpoint(
    vault: FakeKeyVault, certs: TestCertificates, identity: FakeManagedIdentity
) -> None:
    vault.set_secret("a", "1")
    assert sync_client(vault, certs, client_id="11111111-2222").get_secret("a").value == "1"
    assert identity.requests[-1].client_id == "11111111-2222"


def test_errors_are_the_services(vault: FakeKeyVault, certs: TestCertificates) -> None:
    vault.set_secret("off", "x", enabled=False)
    vault.set_secret("old", "still-served", exp=time.time() - 3600, nbf=time.time() - 7200)
    vault.set_secret("early", "also-served", nbf=time.time() + 3600)
    client = sync_client(vault, certs)
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_secret("missing")
    assert missing.value.error is not None and missing.value.error.code == "SecretNotFound"
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("old", "0" * 32)
    with pytest.raises(HttpResponseError) as disabled:
        client.get_secret("off")
    assert disabled.value.status_code == 403
    assert disabled.value.error is not None and disabled.value.error.innererror == {"code": "SecretDisabled"}
    with pytest.raises(HttpResponseError) as bad:
        client.get_secret("bad_name")
    assert bad.value.status_code == 400
    old = client.get_secret("old")
    assert old.value == "still-served" and old.properties.expires_on is not None
    assert client.get_secret("early").value == "also-served"
    vault.forbid()
    with pytest.raises(HttpResponseError) as forbidden:
        client.get_secret("old")
    assert forbidden.value.status_code == 403
    assert forbidden.value.error is not None and forbidden.value.error.innererror == {"code": "ForbiddenByRbac"}


def test_paging_follows_absolute_next_links(vault: FakeKeyVault, certs: TestCertificates) -> None:
    for i in range(60):
        vault.set_secret(f"s{i:02d}", str(i), enabled=i != 7)
    client = sync_client(vault, certs)
    items = list(client.list_properties_of_secrets())
    assert sorted(p.name for p in items) == [f"s{i:02d}" for i in range(60)]
    assert [p.enabled for p in items if p.name == "s07"] == [False]
    assert items[0].version is None  # list ids carry no version
    assert vault.count("list") == 3  # 25 + 25 + 10
    vault.reset_counters()
    assert len(list(client.list_properties_of_secrets(max_page_size=7))) == 60
    assert vault.count("list") == 9
    assert all(q["maxresults"] == "7" for _, _, q in vault.log)
    assert sum("$skiptoken" in q for _, _, q in vault.log) == 8


def test_versions_are_listed_with_ids(vault: FakeKeyVault, certs: TestCertificates) -> None:
    versions = [vault.set_secret("rot", f"v{i}") for i in range(3)]
    client = sync_client(vault, certs)
    listed = [p.version for p in client.list_properties_of_secret_versions("rot")]
    assert listed == versions
    assert vault.count("versions") == 1


def test_throttling_with_retry_after_is_survived(vault: FakeKeyVault, certs: TestCertificates) -> None:
    vault.set_secret("hot", "ok")
    client = sync_client(vault, certs)
    client.get_secret("hot")
    vault.throttle(2, retry_after=0.1)
    assert client.get_secret("hot").value == "ok"
    assert vault.count("throttled") == 2
    vault.throttle(10, retry_after=0.1)
    quick = SecretClient(vault.url, ManagedIdentityCredential(), connection_verify=str(certs.ca_path),
                         verify_challenge_resource=False, retry_total=1)
    with pytest.raises(HttpResponseError) as throttled:
        quick.get_secret("hot")
    assert throttled.value.status_code == 429


def test_a_token_the_identity_never_issued_is_refused(vault: FakeKeyVault, certs: TestCertificates,
                                                     identity: FakeManagedIdentity) -> None:
    vault.set_secret("x", "y")
    client = sync_client(vault, certs)
    client.get_secret("x")
    identity.tokens.revoke_all()
    with pytest.raises(ClientAuthenticationError):
        # The SDK's cached token is refused, it asks the credential again, which answers
        # from its own cache: a second 401 surfaces.
        client.get_secret("x")


def test_down_means_connection_refused(vault: FakeKeyVault, certs: TestCertificates) -> None:
    vault.set_secret("x", "y")
    client = SecretClient(vault.url, ManagedIdentityCredential(), connection_verify=str(certs.ca_path),
                          verify_challenge_resource=False, retry_total=0)
    client.get_secret("x")
    vault.go_down()
    with pytest.raises(ServiceRequestError):
        client.get_secret("x")
    vault.come_up()
    assert client.get_secret("x").value == "y"


def test_identity_checks_the_header_and_known_identities(certs: TestCertificates,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name in IDENTITY_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    with FakeManagedIdentity(user_assigned=["known"], system_assigned=False) as fake:
        env = fake.env()
        monkeypatch.setenv("IDENTITY_ENDPOINT", env["IDENTITY_ENDPOINT"])
        monkeypatch.setenv("IDENTITY_HEADER", "wrong")
        with pytest.raises(ClientAuthenticationError):
            ManagedIdentityCredential(client_id="known").get_token("https://vault.azure.net/.default")
        monkeypatch.setenv("IDENTITY_HEADER", env["IDENTITY_HEADER"])
        assert ManagedIdentityCredential(client_id="known").get_token("https://vault.azure.net/.default").token
        with pytest.raises(ClientAuthenticationError):
            ManagedIdentityCredential(client_id="unknown").get_token("https://vault.azure.net/.default")
        with pytest.raises(ClientAuthenticationError):
            ManagedIdentityCredential().get_token("https://vault.azure.net/.default")
        assert [r.status for r in fake.requests] == [401, 200, 400, 400]


async def test_async_gather_paging_and_throttle(vault: FakeKeyVault, certs: TestCertificates,
                                                identity: FakeManagedIdentity) -> None:
    for i in range(30):
        vault.set_secret(f"k{i}", f"v{i}")
    vault.set_latency(0.05)
    async with AsyncManagedIdentityCredential() as credential, async_client(vault, certs, credential) as client:
        await client.get_secret("k0")
        got = await asyncio.gather(*(client.get_secret(f"k{i}") for i in range(30)))
        assert [s.value for s in got] == [f"v{i}" for i in range(30)]
        assert vault.max_in_flight > 1
        names = [p.name async for p in client.list_properties_of_secrets()]
        assert len(names) == 30 and vault.count("list") == 2
        vault.throttle(1, retry_after=0.1)
        assert (await client.get_secret("k3")).value == "v3"
    assert vault.count("challenge") == 1
    assert len(identity.requests) == 1


async def test_async_imds_style(certs: TestCertificates, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in IDENTITY_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    http_challenge_cache.clear()
    with FakeManagedIdentity() as fake, FakeKeyVault(certs, identity=fake) as vault:
        for name, value in fake.env("imds").items():
            monkeypatch.setenv(name, value)
        vault.set_secret("imds-secret", "yes")
        async with AsyncManagedIdentityCredential(client_id="cid-9") as credential, \
                async_client(vault, certs, credential) as client:
            assert (await client.get_secret("imds-secret")).value == "yes"
        (request,) = fake.requests
        assert request.style == "imds" and request.client_id == "cid-9"


def test_a_held_request_gets_no_answer_until_released(vault: FakeKeyVault, certs: TestCertificates) -> None:
    vault.set_secret("held", "v")
    client = sync_client(vault, certs)
    client.get_secret("held")  # the challenge and the token are done before the hold
    vault.hold()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(lambda: client.get_secret("held").value)
        assert eventually(lambda: vault.held == 1)
        assert not answer.done()  # accepted, read, and not answered
        vault.release()
        assert answer.result(timeout=30) == "v"
    assert vault.held == 0


def test_the_identity_endpoint_can_fail_until_told(identity: FakeManagedIdentity) -> None:
    identity.fail(math.inf, 503)
    for _ in range(3):
        with pytest.raises(ClientAuthenticationError):
            ManagedIdentityCredential(retry_total=0).get_token("https://vault.azure.net/.default")
    identity.fail(0)
    assert ManagedIdentityCredential(retry_total=0).get_token("https://vault.azure.net/.default").token
