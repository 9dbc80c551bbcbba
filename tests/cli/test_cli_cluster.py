"""`converge run` on a three-node JetStream cluster on loopback (the docker/ layout)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from converge.cli import app
from events.server import find_nats_server
from nats_containers import free_ports

pytestmark = [pytest.mark.nats, pytest.mark.slow]


class Node:
    def __init__(
        self, name: str, client: int, cluster: int, http: int, proc: subprocess.Popen[bytes]
    ):
        self.name, self.client, self.cluster, self.http, self.proc = (
            name,
            client,
            cluster,
            http,
            proc,
        )


def _wait_healthy(nodes: list[Node], timeout_sec: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_sec
    pending = list(nodes)
    with httpx.Client(timeout=1.0) as client:
        while pending:
            node = pending[0]
            try:
                if client.get(f"http://127.0.0.1:{node.http}/healthz").status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster node {node.name} not healthy in {timeout_sec}s")
            time.sleep(0.1)  # polling a child process's health endpoint, not synchronising tests


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Node]]:
    binary = find_nats_server()
    ports = free_ports(9)
    nodes: list[Node] = []
    try:
        for i in range(3):
            client, cport, http = ports[3 * i : 3 * i + 3]
            routes = ",".join(f"nats://127.0.0.1:{ports[3 * j + 1]}" for j in range(3) if j != i)
            args = [
                binary,
                f"--server_name=n{i}",
                "--jetstream",
                f"--store_dir={tmp_path / f'n{i}'}",
                "--addr=127.0.0.1",
                f"--port={client}",
                f"--http_port={http}",
                "--cluster_name=converge",
                f"--cluster=nats://127.0.0.1:{cport}",
                f"--routes={routes}",
                f"--log={tmp_path / f'n{i}.log'}",
            ]
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            nodes.append(Node(f"n{i}", client, cport, http, proc))
        _wait_healthy(nodes)
        yield nodes
    finally:
        for node in nodes:
            node.proc.terminate()
        for node in nodes:
            try:
                node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=10)


def test_run_on_a_three_node_cluster_with_r3_streams(cluster: list[Node], namespace: str) -> None:
    runner = CliRunner()
    url = ",".join(f"nats://127.0.0.1:{n.client}" for n in cluster)
    env = {"CONVERGE_REPLICAS": "3", "CONVERGE_CONFIG": ""}
    common = ["--url", url, "--namespace", namespace]
    result = runner.invoke(
        app, ["run", *common, "--agents", "3", "--tasks", "8", "-d", "90", "-q"], env=env
    )
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.output.strip().splitlines()[-1])
    assert summary["states"] == {"completed": 8}
    result = runner.invoke(app, ["streams", "info", "tasks", *common], env=env)
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output)["replicas"] == 3

    # One node down: two of three keep the quorum and the work goes on.
    cluster[2].proc.terminate()
    cluster[2].proc.wait(timeout=10)
    url2 = ",".join(f"nats://127.0.0.1:{n.client}" for n in cluster[:2])
    result = runner.invoke(
        app,
        ["run", "--url", url2, "--namespace", namespace, "--tasks", "4", "-d", "90", "-q"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output.strip().splitlines()[-1])["states"] == {"completed": 4}
