"""``converge projections status`` reports the positions of running processes, read-only."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import nats
import orjson
import pytest
from typer.testing import CliRunner

from converge.cli import app
from converge.observability.positions import positions_bucket
from events import JetStreamEventLog, TaskSubmitted

runner = CliRunner()
WAIT_SEC = 90.0


def _status(nats_url: str, namespace: str) -> dict[str, Any]:
    result = runner.invoke(
        app, ["projections", "status", "--url", nats_url, "--namespace", namespace]
    )
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = orjson.loads(result.stdout)
    return data


async def _stream_names(nats_url: str) -> set[str]:
    nc = await nats.connect(nats_url)
    try:
        return {info.config.name for info in await nc.jetstream().streams_info()}
    finally:
        await nc.close()


@pytest.mark.nats
@pytest.mark.asyncio
async def test_no_process_reports_and_inspection_creates_no_bucket(
    nats_url: str, namespace: str
) -> None:
    async with await JetStreamEventLog.connect(nats_url, namespace=namespace) as log:
        await log.append(TaskSubmitted(task={"id": "t1"}), subject="tasks.t1")
    status = await asyncio.to_thread(_status, nats_url, namespace)
    assert status["processes"] == []
    assert status["processes_note"] == "no running process reports its projection positions"
    assert status["stream_last_seq"]["tasks"] == 1
    assert f"KV_{positions_bucket(namespace)}" not in await _stream_names(nats_url)


@pytest.mark.nats
@pytest.mark.asyncio
async def test_a_running_process_reports_its_lag_then_its_stop(
    nats_url: str, namespace: str
) -> None:
    watcher = await nats.connect(nats_url)
    reported = await watcher.subscribe(f"$KV.{positions_bucket(namespace)}.>")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "converge",
        "run",
        "--url",
        nats_url,
        "--namespace",
        namespace,
        "--tasks",
        "0",
        "-d",
        "300",
        "-q",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await reported.next_msg(timeout=WAIT_SEC)  # the run's first report is written
        status = await asyncio.to_thread(_status, nats_url, namespace)
        mine = [p for p in status["processes"] if p["pid"] == proc.pid]
        assert mine, status["processes"]
        assert "processes_note" not in status
        for entry in mine:
            assert entry["state"] == "live"
            assert entry["report_age_sec"] >= 0
            assert entry["lag"] == sum(
                max(0, entry["stream_last_seq"][s] - n) for s, n in entry["position"].items()
            )
        assert {"tasks"} <= {s for p in mine for s in p["position"]}

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT_SEC):
            await proc.wait()
        status = await asyncio.to_thread(_status, nats_url, namespace)
        mine = [p for p in status["processes"] if p["pid"] == proc.pid]
        assert mine and {p["state"] for p in mine} == {"stopped"}, [
            (p["projection"], p["state"]) for p in mine
        ]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await watcher.close()
