"""The agents' image (docker/Dockerfile): dependencies cached across source edits, and
``converge run`` in a container stopping cleanly on SIGTERM (``docker stop``).

The base image is the ``python_image`` fixture (conftest.py): ``CONVERGE_PYTHON_IMAGE``,
else ``python:3.12-slim`` when it can be pulled, else one built from Debian packages by
``docker/build-python-image.sh`` (root only). Builds use the host's network: the engine
here may give containers no route out.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path

import nats
import nats.errors
import orjson
import pytest

import nats_containers
from events.subjects import stream_name
from nats_containers import NatsContainer, build_agents_image

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]

EDITED_TAG = "converge-agents:test-edited"
RUN = ["run", "--agents", "2", "--tasks", "0", "--duration", "600"]


def _steps(lines: list[str]) -> dict[str, bool]:
    """Each build step's instruction, and whether the build took it from the cache."""
    steps: dict[str, bool] = {}
    current = ""
    for line in lines:
        if line.startswith("Step "):
            current = line.split(" : ", 1)[1]
            steps[current] = False
        elif "Using cache" in line and current:
            steps[current] = True
    return steps


@pytest.fixture(scope="module")
def rebuilt(
    agents_image: tuple[str, list[str]], agents_context: Path, python_image: str
) -> tuple[dict[str, bool], dict[str, bool]]:
    """The steps of the agents' image build from the tree, then after a source edit."""
    _, first = agents_image
    edited = agents_context.parent / "agents-context-edited"
    if not edited.exists():
        shutil.copytree(agents_context, edited)
    with (edited / "converge" / "__init__.py").open("a") as f:
        # unique per run: an edit built before (an earlier run) would come from the cache
        f.write(f"\n# an edit of the source: {uuid.uuid4().hex}\n")
    second = build_agents_image(edited, python_image, EDITED_TAG)
    return _steps(first), _steps(second)


def test_a_source_edit_keeps_the_dependency_layer(
    rebuilt: tuple[dict[str, bool], dict[str, bool]],
) -> None:
    _, second = rebuilt
    dependencies = next(step for step in second if 'pip install ".[server,cli]"' in step)
    assert second[dependencies] is True, second  # taken from the cache
    source = next(step for step in second if step.startswith("COPY converge"))
    assert second[source] is False, second  # the edit is built
    assert second["RUN pip install --no-deps . && rm -rf build"] is False


def test_converge_run_in_a_container_stops_cleanly_on_sigterm(
    agents_image: tuple[str, list[str]], docker_broker: NatsContainer, namespace: str
) -> None:
    client = nats_containers.docker_client()
    container = client.containers.run(
        agents_image[0],
        [*RUN, "--url", docker_broker.url, "--namespace", namespace],
        detach=True,
        init=True,
        network_mode="host",  # the broker publishes on the host's loopback
        labels={nats_containers.LABEL: "agents"},
    )
    try:
        deadline = time.monotonic() + 180
        while asyncio.run(_registrations(docker_broker.url, namespace)) < 2:
            container.reload()
            assert container.status == "running", container.logs().decode()[-2000:]
            assert time.monotonic() < deadline, container.logs().decode()[-2000:]
            time.sleep(0.2)  # polling the broker, not synchronising tests
        container.stop(timeout=60)  # SIGTERM, then SIGKILL after 60 s
        status = container.wait(timeout=120)
        logs = container.logs().decode()
        assert status["StatusCode"] == 0, logs[-2000:]  # 137 would mean it was killed
        summary = orjson.loads(logs.strip().splitlines()[-1])
        assert summary["namespace"] == namespace
    finally:
        container.remove(force=True, v=True)  # and the anonymous volumes it made
        client.close()


async def _registrations(url: str, namespace: str) -> int:
    """How many events the namespace's agents stream holds (0 before it exists)."""
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        info = await nc.jsm(timeout=5).stream_info(stream_name(namespace, "agents"))
        return int(info.state.messages)
    except nats.errors.Error:
        return 0
    finally:
        await nc.close()
