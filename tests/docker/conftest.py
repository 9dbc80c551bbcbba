"""Fixtures of the docker tests: a Docker engine, a broker container, a cluster of them.

Every test here that needs an engine asks for ``docker_engine`` (directly or through the
container fixtures): without an engine it is skipped with the reason, or fails when
``CONVERGE_REQUIRE_DOCKER=1``. The helpers live in ``tests/nats_containers.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import nats_containers
from nats_containers import REPO, NatsCluster, NatsContainer

LOCAL_PYTHON = "converge-python:bookworm-local"

# Rich assertion messages in the shipped contract suite; only possible before its import.
if "events.testing" not in sys.modules:
    pytest.register_assert_rewrite("events.testing")


def _asked_for(config: pytest.Config) -> bool:
    """Whether this run asks for the docker tests: ``-m docker`` or CONVERGE_REQUIRE_DOCKER."""
    markexpr = str(config.getoption("markexpr") or "")
    return nats_containers.docker_required() or (
        "docker" in markexpr and "not docker" not in markexpr
    )


@pytest.fixture(scope="session")
def docker_engine(request: pytest.FixtureRequest) -> None:
    """Skip unless asked for (``-m docker``); then skip (or fail, with
    CONVERGE_REQUIRE_DOCKER=1) when no Docker engine answers.

    Opt-in because they take minutes (image builds on the engine) and a shared machine's
    engine would otherwise run them inside every full test run.
    """
    if not _asked_for(request.config):
        pytest.skip("docker tests run with -m docker (or CONVERGE_REQUIRE_DOCKER=1)")
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


@pytest.fixture(scope="session")
def python_image(docker_engine: None) -> str:
    """The base of the agents' image (docker/Dockerfile's PYTHON_IMAGE).

    ``CONVERGE_PYTHON_IMAGE``, else ``python:3.12-slim`` when it can be pulled, else one
    built from Debian packages by ``docker/build-python-image.sh`` (root only).
    """
    import docker.errors

    explicit = os.environ.get("CONVERGE_PYTHON_IMAGE", "").strip()
    client = nats_containers.docker_client()
    try:
        for image in [explicit] if explicit else ["python:3.12-slim", LOCAL_PYTHON]:
            try:
                client.images.get(image)
                return image
            except docker.errors.ImageNotFound:
                pass
            if image != LOCAL_PYTHON:
                try:
                    client.images.pull(image)
                    return image
                except docker.errors.APIError as exc:
                    if explicit:
                        raise RuntimeError(f"CONVERGE_PYTHON_IMAGE={explicit!r}: {exc}") from exc
    finally:
        client.close()
    if os.geteuid() != 0:
        problem = "python:3.12-slim cannot be pulled and building a base image needs root"
        if nats_containers.docker_required():
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    nats_containers.logger.warning(
        "cannot pull python:3.12-slim; building %s from Debian packages", LOCAL_PYTHON
    )
    subprocess.run(
        ["bash", str(REPO / "docker" / "build-python-image.sh"), LOCAL_PYTHON],
        check=True,
        capture_output=True,
        timeout=1200,
    )
    return LOCAL_PYTHON


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


@pytest.fixture(scope="session")
def agents_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of what the agents' image is built from (tests may edit it)."""
    context = tmp_path_factory.mktemp("agents-context")
    for name in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy2(REPO / name, context / name)
    for name in ("converge", "events", "projections", "docker"):
        shutil.copytree(REPO / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    return context


@pytest.fixture(scope="session")
def agents_image(python_image: str, agents_context: Path) -> tuple[str, list[str]]:
    """The agents' image (docker/Dockerfile) built once from the tree: its tag and the
    build's output lines. The agents' tests and the compose stack's run it."""
    return nats_containers.AGENTS_TAG, nats_containers.build_agents_image(
        agents_context, python_image, nats_containers.AGENTS_TAG
    )
