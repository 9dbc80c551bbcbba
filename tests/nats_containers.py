"""NATS in Docker for the tests: the image, one broker container, a three-node cluster.

Used by ``tests/conftest.py`` when ``CONVERGE_TEST_NATS=docker`` and by ``tests/docker/``.
Containers are started with testcontainers and publish their ports on 127.0.0.1 only, at
host ports chosen here (so a ``docker restart`` keeps them). The image is
``CONVERGE_NATS_IMAGE``, by default the official ``nats`` image of the version of the
``nats-server`` the other tests run; when that image cannot be pulled, an image built
``FROM scratch`` around the ``server`` extra's binary (``docker/nats.Dockerfile``) is used
instead, and one warning says so. An explicit ``CONVERGE_NATS_IMAGE`` never falls back.

testcontainers' reaper (Ryuk) is off unless ``TESTCONTAINERS_RYUK_DISABLED`` says
otherwise: its image must be pulled too, and every container here is removed by the
fixture that started it.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from events.server import find_nats_server

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

logger = logging.getLogger("converge.tests.docker")

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker" / "docker-compose.yml"
NATS_DOCKERFILE = REPO / "docker" / "nats.Dockerfile"
LABEL = "converge.tests"
AGENTS_TAG = "converge-agents:test"
CLIENT_PORT = 4222
CLUSTER_PORT = 6222
HTTP_PORT = 8222
CLUSTER_NAME = "converge"
START_TIMEOUT_SEC = 60.0


def docker_required() -> bool:
    """True when ``CONVERGE_REQUIRE_DOCKER`` asks docker tests to fail instead of skip."""
    return os.environ.get("CONVERGE_REQUIRE_DOCKER", "") not in ("", "0")


@functools.cache
def engine_problem() -> str | None:
    """None when a Docker engine answers, else one line saying why docker tests cannot run."""
    try:
        import docker
        import testcontainers  # noqa: F401
    except ImportError as exc:
        return f"testcontainers is not installed ({exc}); pip install -e '.[dev]'"
    problem = None
    with warnings.catch_warnings():
        # A client whose engine does not answer fails in its constructor and leaves its
        # socket to the garbage collector: collect it here, quietly.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=10)
            try:
                client.ping()
            finally:
                client.close()
        except docker.errors.DockerException as exc:
            problem = f"no Docker engine answers ({str(exc).splitlines()[0][:160]})"
        gc.collect()
    return problem


def docker_client() -> Any:
    import docker

    return docker.from_env(timeout=120)


@functools.cache
def nats_version() -> str:
    """The version of the ``nats-server`` the tests run, e.g. ``2.15.1``."""
    out = subprocess.run(
        [find_nats_server(), "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return out.strip().rsplit("v", 1)[-1]


def default_image() -> str:
    """The official image pinned to the tested server version, e.g. ``nats:2.15.1``."""
    return f"nats:{nats_version()}"


def local_image_tag() -> str:
    return f"converge-nats:{nats_version()}-local"


def build_local_image() -> str:
    """Build the ``FROM scratch`` image around the ``server`` extra's binary; return its tag.

    The same steps as ``docker/build-nats-image.sh``.
    """
    tag = local_image_tag()
    client = docker_client()
    try:
        with tempfile.TemporaryDirectory(prefix="converge-nats-image-") as context:
            shutil.copy2(find_nats_server(), Path(context) / "nats-server")
            shutil.copy2(NATS_DOCKERFILE, Path(context) / "Dockerfile")
            client.images.build(path=context, tag=tag, rm=True, labels={LABEL: "image"})
    finally:
        client.close()
    return tag


@functools.cache
def nats_image() -> str:
    """The image to run: ``CONVERGE_NATS_IMAGE``, or the official one, or the local build."""
    import docker.errors

    explicit = os.environ.get("CONVERGE_NATS_IMAGE", "").strip()
    image = explicit or default_image()
    client = docker_client()
    try:
        try:
            client.images.get(image)
            return image
        except docker.errors.ImageNotFound:
            pass
        try:
            client.images.pull(image)
            return image
        except docker.errors.APIError as exc:
            if explicit:
                raise RuntimeError(
                    f"CONVERGE_NATS_IMAGE={explicit!r} cannot be pulled: {exc}; build a "
                    "local one with docker/build-nats-image.sh and name its tag"
                ) from exc
            reason = str(getattr(exc, "explanation", None) or exc).splitlines()[0][:200]
    finally:
        client.close()
    local = build_local_image()
    logger.warning(
        "cannot pull %s (%s); using %s built from the server extra's nats-server",
        image,
        reason,
        local,
    )
    return local


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_healthy(
    http_port: int,
    timeout_sec: float = START_TIMEOUT_SEC,
    *,
    what: str = "nats-server",
    log: Callable[[], str] | None = None,
) -> None:
    """Return once the server monitored on loopback ``http_port`` reports JetStream healthy."""
    url = f"http://127.0.0.1:{http_port}/healthz?js-enabled-only=true"
    deadline = time.monotonic() + timeout_sec
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"status {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            tail = f"; log:\n{log()}" if log is not None else ""
            raise TimeoutError(f"{what} not healthy in {timeout_sec}s ({last}){tail}")
        time.sleep(0.2)  # polling a server's health endpoint, not synchronising tests


def meta_cluster(http_port: int) -> dict[str, Any]:
    """The ``meta_cluster`` part of the server's ``/jsz``, or ``{}`` while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/jsz", timeout=2) as response:
            meta: dict[str, Any] = json.loads(response.read()).get("meta_cluster") or {}
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    return meta


def single_node_command() -> list[str]:
    """The flags of a one-node broker container."""
    return ["--jetstream", "--store_dir=/data", f"--http_port={HTTP_PORT}"]


def cluster_node_command(name: str, names: list[str]) -> list[str]:
    """The flags of cluster node ``name`` among ``names``: docker-compose.yml uses the same.

    ``--no_advertise``: clients keep to the URLs they were given (published loopback
    ports from the host), never the containers' own addresses.
    """
    routes = ",".join(f"nats://{other}:{CLUSTER_PORT}" for other in names if other != name)
    return [
        f"--server_name={name}",
        "--jetstream",
        "--store_dir=/data",
        f"--http_port={HTTP_PORT}",
        f"--cluster_name={CLUSTER_NAME}",
        f"--cluster=nats://0.0.0.0:{CLUSTER_PORT}",
        f"--routes={routes}",
        "--no_advertise",
    ]


class NatsContainer:
    """A nats-server container whose client and monitoring ports are published on loopback."""

    def __init__(
        self,
        command: list[str],
        *,
        image: str | None = None,
        network: Any = None,
        alias: str | None = None,
    ) -> None:
        from testcontainers.core.container import DockerContainer

        self.name = alias or "nats"
        self.client_port, self.http_port = free_ports(2)
        container = DockerContainer(image or nats_image()).with_command(command)
        # Loopback only: docker-py takes (host_ip, host_port) where testcontainers' own
        # with_bind_ports() would publish on every address.
        container.ports[f"{CLIENT_PORT}/tcp"] = ("127.0.0.1", self.client_port)  # type: ignore[assignment]
        container.ports[f"{HTTP_PORT}/tcp"] = ("127.0.0.1", self.http_port)  # type: ignore[assignment]
        kwargs: dict[str, Any] = {"labels": {LABEL: "nats"}}
        if network is not None:
            container.with_network(network).with_network_aliases(self.name)
            kwargs["hostname"] = self.name
        self.container = container.with_kwargs(**kwargs)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def wrapped(self) -> Any:
        return self.container.get_wrapped_container()

    @property
    def is_running(self) -> bool:
        try:
            self.wrapped.reload()
        except Exception:  # the engine no longer knows the container
            return False
        return bool(self.wrapped.status == "running")

    def start(self) -> NatsContainer:
        self.container.start()
        return self

    def wait_ready(self, timeout_sec: float = START_TIMEOUT_SEC) -> None:
        """Return once the server answers its JetStream health check."""
        wait_healthy(self.http_port, timeout_sec, what=self.name, log=self.log_tail)

    def meta_state(self) -> tuple[str | None, int]:
        """The JetStream meta leader this node knows and how many current peers it sees."""
        meta = meta_cluster(self.http_port)
        peers = [r for r in meta.get("replicas") or [] if r.get("current")]
        return meta.get("leader") or None, len(peers)

    def kill(self) -> None:
        """SIGKILL the server: no shutdown, no flush."""
        self.wrapped.kill()

    def restart(self, timeout_sec: float = 10) -> None:
        """``docker restart``: SIGTERM (SIGKILL after ``timeout_sec``), then start again."""
        self.wrapped.restart(timeout=int(timeout_sec))

    def log_tail(self, lines: int = 20) -> str:
        try:
            return bytes(self.wrapped.logs(tail=lines)).decode(errors="replace")
        except Exception as exc:  # the container is gone: say so instead of its log
            return f"(no log: {exc})"

    def stop(self) -> None:
        try:
            self.container.stop()
        except Exception as exc:  # already removed: nothing left to clean
            logger.warning("removing container %s: %s", self.name, exc)


class NatsCluster:
    """Three (or ``size``) cluster nodes on one testcontainers network, named nats-1..N."""

    def __init__(self, size: int = 3, *, image: str | None = None) -> None:
        from testcontainers.core.network import Network

        self.names = [f"nats-{i}" for i in range(1, size + 1)]
        self.network = Network(docker_network_kw={"labels": {LABEL: "network"}})
        self.nodes = [
            NatsContainer(
                cluster_node_command(name, self.names),
                image=image,
                network=self.network,
                alias=name,
            )
            for name in self.names
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> NatsContainer:
        return self.nodes[self.names.index(name)]

    def start(self, timeout_sec: float = START_TIMEOUT_SEC) -> NatsCluster:
        self.network.create()
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready(timeout_sec)
        self.wait_meta_leader(timeout_sec)
        return self

    def wait_meta_leader(self, timeout_sec: float = START_TIMEOUT_SEC) -> None:
        """Return once every node names the same JetStream meta leader, which sees all peers.

        A node answers its health check before that; a client creating R3 streams
        earlier gets "insufficient resources" or a timeout.
        """
        deadline = time.monotonic() + timeout_sec
        while True:
            states = [node.meta_state() for node in self.nodes]
            leaders = {leader for leader, _ in states}
            # Every node names the same leader, and the leader sees every peer current.
            if (
                len(leaders) == 1
                and (leader := leaders.pop()) in self.names
                and states[self.names.index(leader)][1] == len(self.nodes) - 1
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no JetStream meta leader in {timeout_sec}s: {states}")
            time.sleep(0.2)  # polling the nodes' monitoring endpoints, not synchronising tests

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        try:
            self.network.remove()
        except Exception as exc:  # never created, or already gone
            logger.warning("removing network %s: %s", self.network.name, exc)


def build_agents_image(context: Path, python_image: str, tag: str) -> list[str]:
    """Build docker/Dockerfile from ``context`` as ``tag``; return the build's output lines.

    Builds use the host's network: the engine here may give containers no route out.
    """
    client = docker_client()
    try:
        _, logs = client.images.build(
            path=str(context),
            dockerfile="docker/Dockerfile",
            tag=tag,
            buildargs={"PYTHON_IMAGE": python_image},
            network_mode="host",
            rm=True,
            labels={LABEL: "image"},
        )
    finally:
        client.close()
    return [str(chunk.get("stream", "")).strip() for chunk in logs if chunk.get("stream")]
