"""Shared fixtures: a real nats-server per test session, a fresh namespace per test,
and ``event_log`` / ``log_factory`` parametrized over both EventLog backends.

The server is started once per pytest process (each xdist worker has its own) on a
free loopback port with a temporary JetStream directory. When the binary is missing
the NATS tests are skipped on a developer machine, but fail when ``CI`` or
``CONVERGE_REQUIRE_NATS`` is set: in CI a missing server is a failure, not a skip.

The session broker may be another one (tests that need their own server, to restart it
or to cluster it, still start their own):

- ``CONVERGE_TEST_NATS_URL=nats://host:port``: an existing broker with JetStream; the
  per-test namespaces keep tests apart on it.
- ``CONVERGE_TEST_NATS=docker``: a nats-server container started with testcontainers
  (``tests/nats_containers.py``; image ``CONVERGE_NATS_IMAGE``).
"""

from __future__ import annotations

import ast
import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from blockbuster import BlockBuster, blockbuster_ctx

from converge.errors import ConfigError
from events import EventLog, EventSigner, MemoryEventLog
from events.server import EmbeddedNatsServer, find_nats_server

# Modules of ours that may block the event loop, each with its reason. Every function
# defined in them may make blocking calls (blockbuster matches frames by file and name).
BLOCKING_ALLOWED: dict[str, str] = {
    "converge/extensions/storage/file.py": "FileStore is a sync Store by design (API.md): "
    "small local files; async code that must not block uses NatsKVStore",
    "converge/core/store.py": "SyncStoreAdapter presents a sync Store inline, as documented",
    "events/server.py": "the embedded server's start and stop touch its data directory, "
    "lock file and binary once per process, before and after any broker traffic",
    "events/datadir.py": "the data directory lock: one small file, at server start and stop",
    "events/jetstream/client.py": "credential, nkey and TLS files are read once per connection",
    "converge/observability/otel.py": "prometheus_client's process collector reads "
    "/proc/self (procfs, no disk) at import and once per /metrics scrape",
    "converge/security.py": "the service signing key: one small file read (or created) once "
    "per process, before any broker traffic",
}


def _functions_of(module_file: str) -> set[str]:
    root = Path(__file__).resolve().parents[1]
    tree = ast.parse((root / module_file).read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


_ALLOWED_FUNCTIONS = {module: _functions_of(module) for module in BLOCKING_ALLOWED}


@pytest.fixture(autouse=True)
def _no_blocking_calls() -> Iterator[BlockBuster]:
    """Fail a test when our code blocks a running event loop (file or socket I/O,
    sleeps, locks) outside the modules allowed above."""
    with blockbuster_ctx(["converge", "events", "projections"]) as bb:
        for function in bb.functions.values():
            for module, names in _ALLOWED_FUNCTIONS.items():
                function.can_block_in(module, names)
        yield bb


def _nats_required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("CONVERGE_REQUIRE_NATS"))


def _broker_choice() -> str:
    """``url``, ``docker`` or ``embedded``: which session broker the environment asks for."""
    url = os.environ.get("CONVERGE_TEST_NATS_URL", "").strip()
    kind = os.environ.get("CONVERGE_TEST_NATS", "").strip().lower() or "embedded"
    if kind not in ("embedded", "docker"):
        raise pytest.UsageError(f"CONVERGE_TEST_NATS={kind!r}: use 'docker' or leave it unset")
    if url and kind == "docker":
        raise pytest.UsageError("set CONVERGE_TEST_NATS_URL or CONVERGE_TEST_NATS=docker, not both")
    return "url" if url else kind


def pytest_report_header(config: pytest.Config) -> str:
    choice = _broker_choice()
    if choice == "url":
        return f"nats broker: CONVERGE_TEST_NATS_URL={os.environ['CONVERGE_TEST_NATS_URL']}"
    if choice == "docker":
        return "nats broker: a container (CONVERGE_TEST_NATS=docker)"
    return "nats broker: an embedded nats-server per test process"


class ExternalBroker:
    """The session broker when it is not this process's to start: a URL or a container."""

    def __init__(self, url: str, container: Any = None) -> None:
        self.url = url
        self.container = container

    @property
    def is_running(self) -> bool:
        if self.container is not None:
            return bool(self.container.is_running)
        host, _, port = self.url.split(",")[0].rsplit("/", 1)[-1].rpartition(":")
        try:
            socket.create_connection((host.rpartition("@")[2], int(port)), timeout=5).close()
        except OSError:
            return False
        return True

    def problem(self) -> str:
        if self.container is not None:
            return "its container stopped; last lines of its log:\n" + self.container.log_tail()
        return "nothing accepts connections there"


async def _check_broker(url: str) -> None:
    import nats

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        await nc.jetstream(timeout=5).account_info()
    finally:
        await nc.close()


def _external_broker() -> ExternalBroker:
    url = os.environ["CONVERGE_TEST_NATS_URL"].strip()
    try:
        asyncio.run(_check_broker(url))
    except Exception as exc:
        pytest.fail(
            f"CONVERGE_TEST_NATS_URL={url}: no JetStream broker answers there ({exc!r})",
            pytrace=False,
        )
    return ExternalBroker(url)


def _container_broker() -> Iterator[ExternalBroker]:
    import nats_containers

    problem = nats_containers.engine_problem()
    if problem is not None:
        pytest.fail(f"CONVERGE_TEST_NATS=docker: {problem}", pytrace=False)
    container = nats_containers.NatsContainer(nats_containers.single_node_command()).start()
    try:
        container.wait_ready()
        yield ExternalBroker(container.url, container)
    finally:
        container.stop()


@pytest.fixture(scope="session")
def nats_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedNatsServer | ExternalBroker]:
    """A running nats-server with JetStream, shared by the tests of this process.

    By default one this process starts; see the module docstring for the others.
    """
    choice = _broker_choice()
    if choice == "url":
        yield _external_broker()
        return
    if choice == "docker":
        yield from _container_broker()
        return
    try:
        find_nats_server()
    except ConfigError as exc:
        if _nats_required():
            pytest.fail(f"nats-server is required here: {exc}", pytrace=False)
        pytest.skip(str(exc))
    # A loaded machine (two workers, benchmarks) can take seconds to start a server.
    server = EmbeddedNatsServer(data_dir=tmp_path_factory.mktemp("nats"), start_timeout_sec=60)
    asyncio.run(server.start())
    try:
        yield server
    finally:
        asyncio.run(server.stop())


@pytest.fixture
def nats_url(nats_server: EmbeddedNatsServer | ExternalBroker) -> str:
    """The session server's URL; a server that died is reported here, then restarted.

    Without this, every later NATS test of the process would fail with a connection
    error that hides the cause; the server's log (in its data directory) names it.
    A broker this process did not start is only reported.
    """
    if isinstance(nats_server, ExternalBroker):
        if not nats_server.is_running:
            pytest.fail(
                f"the session broker at {nats_server.url} stopped: {nats_server.problem()}",
                pytrace=False,
            )
        return nats_server.url
    if not nats_server.is_running:
        log_path = nats_server.log_path
        try:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            tail = ["(no log)"]
        asyncio.run(nats_server.start())  # the same data directory, a new port
        pytest.fail(
            f"the session nats-server died before this test (restarted at {nats_server.url}); "
            f"last lines of {log_path}:\n" + "\n".join(tail),
            pytrace=False,
        )
    return nats_server.url


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses, so streams never collide."""
    return f"t{uuid.uuid4().hex[:12]}"


LogFactory = Callable[..., Awaitable[EventLog]]

BACKENDS = ["memory", pytest.param("jetstream", marks=pytest.mark.nats)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str | None:
    """``None`` for the in-process log, else the URL of the session's nats-server."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("nats_url")
    return url


async def open_log(url: str | None, namespace: str, signer: EventSigner | None = None) -> EventLog:
    """Open (and start) an event log of the backend ``url`` selects, signing with ``signer``."""
    if url is None:
        log = MemoryEventLog(namespace, signer=signer)
        await log.start()
        return log
    from events import JetStreamEventLog

    return await JetStreamEventLog.connect(url, namespace=namespace, signer=signer)


@pytest.fixture
def log_factory(backend: str | None) -> LogFactory:
    """Open further logs of the test's backend (the caller closes them)."""

    async def factory(namespace: str, signer: EventSigner | None = None) -> EventLog:
        return await open_log(backend, namespace, signer)

    return factory


@pytest_asyncio.fixture
async def event_log(backend: str | None, namespace: str) -> AsyncIterator[EventLog]:
    log = await open_log(backend, namespace)
    try:
        yield log
    finally:
        await log.close()


SIGNING_KEY = bytes(range(32))


@pytest.fixture
def signer() -> EventSigner:
    """The signer of ``signed_log``: agent ``agent-a`` with a fixed Ed25519 key."""
    return EventSigner(SIGNING_KEY, key_id="agent-a")


@pytest_asyncio.fixture
async def signed_log(
    backend: str | None, namespace: str, signer: EventSigner
) -> AsyncIterator[EventLog]:
    """A log of the test's backend that signs every append with ``signer``."""
    log = await open_log(backend, namespace, signer)
    try:
        yield log
    finally:
        await log.close()
