"""docker/: the compose cluster runs what the docker tests run, and it serves converge.

The file checks need no engine; the compose test needs an engine and a compose CLI
(the ``docker compose`` plugin, or ``docker-compose`` from the ``docker`` extra).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

import nats_containers
from events import JetStreamEventLog, TaskReported, TaskSubmitted
from events.testing import collect
from nats_containers import COMPOSE_FILE, REPO, cluster_node_command, free_ports, nats_version

NODES = ["nats-1", "nats-2", "nats-3"]
CONVERGE = [sys.executable, "-m", "converge"]


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return doc


def test_compose_nodes_run_the_flags_and_version_the_tests_run() -> None:
    services = _compose()["services"]
    for name in NODES:
        assert services[name]["command"] == cluster_node_command(name, NODES), name
        assert services[name]["image"] == f"${{NATS_IMAGE:-nats:{nats_version()}}}", (
            f"docker/docker-compose.yml should default NATS_IMAGE to the tested server "
            f"version, nats:{nats_version()}"
        )
        for port in services[name].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_agents_image_installs_dependencies_before_the_source() -> None:
    """The dependency layer sees pyproject.toml only, so a source edit keeps it cached."""
    text = (REPO / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.split() for line in text.splitlines() if line.strip() and line[0] != "#"]
    copies = [words[1:-1] for words in lines if words[0] == "COPY"]
    runs = [i for i, words in enumerate(lines) if words[0] == "RUN" and "pip" in words]
    first_source = next(i for i, words in enumerate(lines) if words[:2] == ["COPY", "converge"])
    assert copies[0] == ["pyproject.toml", "README.md"]
    assert runs[0] < first_source < runs[-1]
    services = _compose()["services"]
    for name in ("agents-a", "agents-b"):
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"
        assert services[name]["init"] is True  # signals reach converge during start-up too


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone is not None else None


def _cluster_formed(meta: dict[str, Any]) -> bool:
    return bool(meta.get("leader")) and len(meta.get("replicas") or []) == len(NODES) - 1


@pytest.fixture
def compose(nats_image: str) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The compose CLI with a project of the test's own, taken down (with volumes) after."""
    cli = _compose_cli()
    if cli is None:
        reason = "no compose CLI (docker compose plugin, or pip install -e '.[docker]')"
        if nats_containers.docker_required():
            pytest.fail(f"CONVERGE_REQUIRE_DOCKER is set but there is {reason}", pytrace=False)
        pytest.skip(reason)
    port, http_port = free_ports(2)
    env = dict(
        os.environ,
        NATS_IMAGE=nats_image,
        NATS_PORT=str(port),
        NATS_HTTP_PORT=str(http_port),
        COMPOSE_PROJECT_NAME=f"converge-test-{uuid.uuid4().hex[:8]}",
    )
    base = [*cli, "-f", str(COMPOSE_FILE)]
    try:
        yield base, env
    finally:
        subprocess.run(
            [*base, "down", "--volumes", "--timeout", "5"],
            env=env,
            capture_output=True,
            timeout=180,
        )


@pytest.mark.docker
@pytest.mark.nats
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compose_cluster_serves_converge_run(
    compose: tuple[list[str], dict[str, str]], namespace: str, tmp_path: Path
) -> None:
    base, env = compose
    up = subprocess.run(
        [*base, "up", "--detach", *NODES], env=env, capture_output=True, text=True, timeout=300
    )
    assert up.returncode == 0, up.stderr
    http_port = int(env["NATS_HTTP_PORT"])
    nats_containers.wait_healthy(http_port, what="nats-1")
    # R3 streams need the meta leader and all three peers: wait for nats-1 to see them.
    deadline = time.monotonic() + nats_containers.START_TIMEOUT_SEC
    while not _cluster_formed(nats_containers.meta_cluster(http_port)):
        assert time.monotonic() < deadline, nats_containers.meta_cluster(http_port)
        time.sleep(0.2)  # polling nats-1's monitoring endpoint, not synchronising tests
    url = f"nats://127.0.0.1:{env['NATS_PORT']}"
    run_env = dict(env, CONVERGE_REPLICAS="3", CONVERGE_CONFIG="")
    run = subprocess.run(
        [
            *[*CONVERGE, "run", "--url", url, "--namespace", namespace],
            *["--agents", "2", "--tasks", "20", "--duration", "120", "-q"],
            *["--data-dir", str(tmp_path / "data")],
        ],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert orjson.loads(run.stdout.strip().splitlines()[-1])["states"] == {"completed": 20}
    info = subprocess.run(
        [*CONVERGE, "streams", "info", "tasks", "--url", url, "--namespace", namespace],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert info.returncode == 0, info.stderr
    assert orjson.loads(info.stdout)["replicas"] == 3


def _compose_run(
    base: list[str], env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _exit_codes(base: list[str], env: dict[str, str]) -> dict[str, tuple[str, int]]:
    """Each service's container state and exit code (``compose ps -a``)."""
    ps = _compose_run(base, env, "ps", "--all", "--format", "json")
    assert ps.returncode == 0, ps.stderr
    text = ps.stdout.strip()
    rows = (
        orjson.loads(text) if text.startswith("[") else [orjson.loads(x) for x in text.splitlines()]
    )
    return {row["Service"]: (row["State"], int(row["ExitCode"])) for row in rows}


def _summary(base: list[str], env: dict[str, str], service: str) -> dict[str, Any]:
    """The JSON summary a service's `converge run` printed last."""
    logs = _compose_run(base, env, "logs", "--no-log-prefix", "--no-color", service)
    assert logs.returncode == 0, logs.stderr
    last = [line for line in logs.stdout.splitlines() if line.startswith("{")][-1]
    summary: dict[str, Any] = orjson.loads(last)
    return summary


async def _read_tasks(url: str, namespace: str) -> list[Any]:
    log = await JetStreamEventLog.connect(url, namespace=namespace, replicas=3)
    try:
        return await collect(log, stream="tasks")
    finally:
        await log.close()


@pytest.mark.docker
@pytest.mark.nats
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_whole_stack_runs_every_agent_service_to_the_end(
    compose: tuple[list[str], dict[str, str]],
    agents_image: tuple[str, list[str]],
    namespace: str,
    tmp_path: Path,
) -> None:
    """`up` of every service (the image the suite built): the two demo services each
    finish their 50 tasks and exit 0, my-agents serves a task from the host and stops
    cleanly; every task in the stream is done exactly once."""
    base, env = compose
    env = dict(env, CONVERGE_IMAGE=agents_image[0], CONVERGE_NAMESPACE=namespace)
    started = time.monotonic()
    up = _compose_run(base, env, "up", "--detach", "--no-build")
    assert up.returncode == 0, up.stderr
    demos = ["agents-a", "agents-b"]
    waited = _compose_run(base, env, "wait", *demos, timeout=600)
    codes = _exit_codes(base, env)
    for service in demos:
        if codes[service] != ("exited", 0):  # a restart (restart: on-failure) counts too
            logs = _compose_run(base, env, "logs", "--tail", "40", "--no-color", *demos)
            pytest.fail(f"{codes} {waited.stderr}\n{logs.stdout[-6000:]}", pytrace=False)
    demo_sec = time.monotonic() - started
    summaries = {service: _summary(base, env, service) for service in demos}
    for service, summary in summaries.items():
        assert summary["states"] == {"completed": 50}, (service, summary)
        assert summary["rejected_events"] == 0, (service, summary)

    # my-agents (docker/agents/word_stats.py) serves a task submitted from the host (in
    # no pool: agents served from the command line join none; the demo's are in "demo").
    url = f"nats://127.0.0.1:{env['NATS_PORT']}"
    host = ["--url", url, "--namespace", namespace]
    host_env = dict(
        env, CONVERGE_CONFIG="", CONVERGE_REPLICAS="3", CONVERGE_DATA_DIR=str(tmp_path / "host")
    )
    text = '{"text": "a stack of containers"}'
    submit = subprocess.run(
        [*CONVERGE, "tasks", "submit", "analyze-text", "--input", text, *host],
        env=host_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submit.returncode == 0, submit.stderr
    task_id = submit.stdout.strip()
    wait = subprocess.run(
        [*CONVERGE, "tasks", "wait", task_id, "--timeout", "120", "--json", *host],
        env=host_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert wait.returncode == 0, (wait.stdout, wait.stderr)
    assert orjson.loads(wait.stdout)["result"] == {
        "words": 4,
        "longest": "containers",
        "by": "word_stats",
    }
    stop = _compose_run(base, env, "stop", "--timeout", "60", "my-agents")
    assert stop.returncode == 0, stop.stderr
    assert _exit_codes(base, env)["my-agents"] == ("exited", 0)  # drained, not killed
    mine = _summary(base, env, "my-agents")
    assert mine["still_assigned"] == []

    records = asyncio.run(_read_tasks(url, namespace))
    submitted = {r.event.task["id"] for r in records if isinstance(r.event, TaskSubmitted)}
    reports = Counter(r.event.task_id for r in records if isinstance(r.event, TaskReported))
    by_service = Counter(
        next(
            (s for s, sm in summaries.items() if r.event.agent_id[:12] in sm["per_worker"]),
            "my-agents" if r.event.agent_id in mine["agent_ids"] else "?",
        )
        for r in records
        if isinstance(r.event, TaskReported)
    )
    lost = len(submitted - set(reports))
    duplicated = sum(1 for n in reports.values() if n > 1)
    print(  # noqa: T201 (the figures this test exists to show; run with -s or -rP)
        f"compose stack: tasks={len(submitted)} lost={lost} duplicated={duplicated} "
        f"done_by={dict(by_service)} demo_services_done_in={demo_sec:.0f}s "
        f"(up included) run_seconds={[s['seconds'] for s in summaries.values()]}"
    )
    assert len(submitted) == 2 * 50 + 1
    assert lost == 0
    assert duplicated == 0
    assert "?" not in by_service
