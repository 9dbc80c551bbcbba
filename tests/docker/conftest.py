"""Fixtures of the docker tests: a Docker engine, a broker container, a cluster of them.

Every test here that needs an engine asks for ``docker_engine`` (directly or through the
container fixtures): without an engine it is skipped with the reason, or fails when
``CONVERGE_REQUIRE_DOCKER=1``. The helpers live in ``tests/nats_containers.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

import nats_containers
from nats_containers import NatsCluster, NatsContainer

# Rich assertion messages in the shipped contract suite; only possible before its import.
if "events.testing" not in sys.modules:
    pytest.register_assert_rewrite("events.testing")


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip (or fail, with CONVERGE_REQUIRE_DOCKER=1) when no Docker engine answers."""
    problem = nats_containers.engine_problem()
    if problem is None:
        return
    if nats_containers.docker_required():
        pytest.fail(f"CONVERGE_REQUIRE_DOCKER is set but {problem}", pytrace=False)
    pytest.skip(problem)


@pytest.fixture(scope="session")
def nats_image(docker_engine: None) -> str:
    """The NATS image the containers run (see ``nats_containers.nats_image``)."""
    return nats_containers.nats_image()


@pytest.fixture(scope="module")
def docker_broker(nats_image: str) -> Iterator[NatsContainer]:
    """One nats-server container shared by a module's tests (each uses its own namespace)."""
    container = NatsContainer(nats_containers.single_node_command(), image=nats_image).start()
    try:
        container.wait_ready()
        yield container
    finally:
        container.stop()


@pytest.fixture
def own_broker(nats_image: str) -> Iterator[NatsContainer]:
    """A nats-server container of the test's own, free to restart or kill."""
    container = NatsContainer(nats_containers.single_node_command(), image=nats_image).start()
    try:
        container.wait_ready()
        yield container
    finally:
        container.stop()


@pytest.fixture
def docker_cluster(nats_image: str) -> Iterator[NatsCluster]:
    """Three cluster nodes (nats-1..3) on one docker network, ports published on loopback."""
    cluster = NatsCluster(3, image=nats_image)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
