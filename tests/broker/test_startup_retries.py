"""Start-up retries: a broker that comes up after the command, and the stated limit."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import orjson
import pytest

from events.server import EmbeddedNatsServer
from nats_containers import free_ports

pytestmark = [pytest.mark.nats]

ROOT = Path(__file__).resolve().parents[2]
WAIT_SEC = 120.0


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGE_")}
    if "CONVERGE_NATS_SERVER" in os.environ:
        env["CONVERGE_NATS_SERVER"] = os.environ["CONVERGE_NATS_SERVER"]
    return {**env, **extra}


@pytest.mark.asyncio
async def test_run_waits_for_a_broker_that_starts_after_it(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "converge",
        "run",
        "--url",
        f"nats://127.0.0.1:{port}",
        "--tasks",
        "5",
        "-q",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(CONVERGE_STARTUP_TIMEOUT_SEC="90"),
        cwd=tmp_path,
    )
    assert proc.stderr is not None and proc.stdout is not None
    try:
        # The broker is down: the command says it waits (a retry), and does not exit.
        line = (await asyncio.wait_for(proc.stderr.readline(), WAIT_SEC)).decode()
        assert "waiting for the broker" in line and f"127.0.0.1:{port}" in line, line
        assert proc.returncode is None
        async with EmbeddedNatsServer(data_dir=tmp_path / "nats", port=port):
            out, err = await asyncio.wait_for(proc.communicate(), WAIT_SEC)
            assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    summary = orjson.loads(out.decode().strip().splitlines()[-1])
    assert summary["states"] == {"completed": 5}


@pytest.mark.asyncio
async def test_run_gives_up_after_the_stated_limit_with_one_error_line(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "converge",
        "run",
        "--url",
        f"nats://127.0.0.1:{free_ports(1)[0]}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(CONVERGE_STARTUP_TIMEOUT_SEC="1.5"),
        cwd=tmp_path,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_SEC)
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors == lines[-1:], lines
    assert "gave up after 1.5s" in errors[0] and "startup_timeout_sec" in errors[0]
    assert any("waiting for the broker" in line for line in lines[:-1])
    assert out == b""


@pytest.mark.asyncio
async def test_sigterm_during_retries_exits_within_the_shutdown_limit(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "converge",
        "run",
        "--url",
        f"nats://127.0.0.1:{free_ports(1)[0]}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(CONVERGE_STARTUP_TIMEOUT_SEC="600", CONVERGE_SHUTDOWN_TIMEOUT_SEC="1"),
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    try:
        line = (await asyncio.wait_for(proc.stderr.readline(), WAIT_SEC)).decode()
        assert "waiting for the broker" in line, line
        proc.send_signal(signal.SIGTERM)
        # Still retrying (600 s allowed), it is made to exit by its 1 s shutdown limit.
        assert await asyncio.wait_for(proc.wait(), WAIT_SEC) == 1
        rest = (await proc.stderr.read()).decode().strip().splitlines()
        assert rest[-1] == (
            "error: shutdown did not finish within 1s (shutdown_timeout_sec); exiting"
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
