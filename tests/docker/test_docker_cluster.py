"""``converge run`` on a three-node cluster of containers while the stream leader is killed.

The nodes (nats-1..3, the flags of docker/docker-compose.yml) share one docker network and
publish their client ports on loopback; the run connects to all three with R3 streams.
Once the run is well under way, the container of the task stream's leader gets SIGKILL.
The run must still finish every task, and the stream, read back afterwards, must hold
exactly one report per task: none lost, none done twice. The figures are printed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson
import pytest

from events import JetStreamEventLog, TaskReported, TaskSubmitted
from events.subjects import stream_name
from events.testing import collect
from nats_containers import NatsCluster

pytestmark = [pytest.mark.docker, pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(900)]

TASKS = 200
RUN_TIMEOUT_SEC = 300.0


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


async def _stream_state(jsm: Any, stream: str) -> tuple[int, int, str | None]:
    """The stream's message and subject counts and its leader, or (-1, -1, None) while
    it does not answer. One subject per task: all are submitted once subjects == TASKS."""
    try:
        info = await jsm.stream_info(stream, subjects_filter=">")
    except (TimeoutError, nats.errors.Error):
        return -1, -1, None
    leader = info.cluster.leader if info.cluster is not None else None
    return int(info.state.messages), len(info.state.subjects or {}), leader


@pytest.mark.asyncio
async def test_run_survives_the_stream_leader_being_killed(
    docker_cluster: NatsCluster, namespace: str, tmp_path: Path
) -> None:
    url = ",".join(docker_cluster.urls)
    stream = stream_name(namespace, "tasks")
    env = dict(os.environ, CONVERGE_REPLICAS="3", CONVERGE_CONFIG="")
    stderr_path = tmp_path / "run.stderr"
    with stderr_path.open("wb") as stderr:
        run = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "converge", "run", "--url", url, "--namespace", namespace],
            *["--agents", "3", "--tasks", str(TASKS), "--duration", str(RUN_TIMEOUT_SEC)],
            *["--data-dir", str(tmp_path / "data"), "-q"],
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    nc = await nats.connect(docker_cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        jsm = nc.jsm(timeout=1.0)
        # Kill mid-run: the submissions mostly in, claims and reports under way (each task
        # takes three events: submitted, claimed, reported). The failures this test has
        # found, and their fixes, are in docker/README.md.
        async with asyncio.timeout(RUN_TIMEOUT_SEC):
            while True:
                messages, _, leader = await _stream_state(jsm, stream)
                if leader is not None and messages >= TASKS + TASKS // 2:
                    break
                assert run.returncode is None, f"the run ended early: {_tail(stderr_path)}"
                await asyncio.sleep(0.05)  # polling the broker's stream state
        assert messages < 3 * TASKS, "every task was done before the kill"
        killed = leader
        # Watch the election from the survivors only: a nats-py client reconnecting to the
        # killed node's published port (the engine's proxy accepts, then hangs up) leaves
        # that socket to the garbage collector, a ResourceWarning that fails the test.
        await nc.close()
        survivors = [n.url for n in docker_cluster.nodes if n.name != killed]
        nc = await nats.connect(survivors, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        jsm = nc.jsm(timeout=1.0)
        await asyncio.to_thread(docker_cluster.node(killed).kill)
        killed_at = time.monotonic()
        async with asyncio.timeout(120):
            while True:
                _, _, leader = await _stream_state(jsm, stream)
                if leader is not None and leader != killed:
                    break
                await asyncio.sleep(0.05)  # polling the broker's stream state
        leaderless_sec = time.monotonic() - killed_at

        async with asyncio.timeout(RUN_TIMEOUT_SEC):
            out, _ = await run.communicate()
        assert run.returncode == 0, _tail(stderr_path)
        summary = orjson.loads(out.decode().strip().splitlines()[-1])
    finally:
        if run.returncode is None:
            run.kill()
            await run.wait()
        await nc.close()

    log = await JetStreamEventLog.connect(
        survivors, namespace=namespace, replicas=3, api_timeout_sec=10.0
    )
    try:
        records = await collect(log, stream="tasks")
    finally:
        await log.close()
    submitted = {r.event.task["id"] for r in records if isinstance(r.event, TaskSubmitted)}
    reports = Counter(r.event.task_id for r in records if isinstance(r.event, TaskReported))
    lost = len(submitted - set(reports))
    duplicated = sum(1 for n in reports.values() if n > 1)
    print(  # noqa: T201 (the figures this test exists to show; run with -s or -rP)
        f"cluster kill: tasks={len(submitted)} lost={lost} duplicated={duplicated} "
        f"killed={killed} at {messages} of ~{3 * TASKS} events "
        f"seconds_without_leader={leaderless_sec:.1f} run_seconds={summary['seconds']}"
    )
    assert len(submitted) == TASKS
    assert summary["states"] == {"completed": TASKS}
    assert lost == 0
    assert duplicated == 0
