"""``converge replay --headers`` and ``--follow`` (a live tail until a signal)."""

from __future__ import annotations

import asyncio
import signal
import sys

import orjson
import pytest
from typer.testing import CliRunner

from converge.cli import app
from converge.coordination.task_manager import TaskManager
from converge.core.task import Task
from events import JetStreamEventLog

runner = CliRunner()


@pytest.mark.nats
def test_replay_headers(nats_url: str, namespace: str) -> None:
    common = ["--url", nats_url, "--namespace", namespace]
    result = runner.invoke(app, ["tasks", "submit", "hello", *common])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["replay", "--stream", "tasks", "--headers", *common])
    assert result.exit_code == 0, result.output
    [event] = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert event["type"] == "task.submitted"
    headers = event["headers"]
    assert headers["Converge-Event-Type"] == "task.submitted"
    assert headers["Nats-Msg-Id"] == event["id"]
    result = runner.invoke(app, ["replay", "--stream", "tasks", *common])
    assert "headers" not in orjson.loads(result.stdout.splitlines()[0])


@pytest.mark.parametrize(
    "extra", [["--limit", "3"], ["--end-seq", "4"], ["--end-time", "@1700000000"]]
)
def test_follow_takes_no_end(extra: list[str]) -> None:
    result = runner.invoke(app, ["replay", "--follow", *extra])
    assert result.exit_code == 2 and result.output.startswith("error: ")


@pytest.mark.nats
@pytest.mark.slow
@pytest.mark.asyncio
async def test_replay_follow_prints_new_events_until_interrupted(
    nats_url: str, namespace: str
) -> None:
    log = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "converge", "replay", "--follow", "--stream", "tasks"),
        *("--url", nats_url, "--namespace", namespace),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with TaskManager(log) as tm:
            first = await tm.submit(Task("one"))
            async with asyncio.timeout(60):
                line = await proc.stdout.readline()
            assert orjson.loads(line)["data"]["task"]["id"] == first
            second = await tm.submit(Task("two"))  # after the tail caught up: live
            async with asyncio.timeout(60):
                line = await proc.stdout.readline()
            assert orjson.loads(line)["data"]["task"]["id"] == second
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await log.close()
