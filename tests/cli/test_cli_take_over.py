"""Two processes on one data directory, and the one that owns its server stops first.

``converge run`` on a data directory another process owns (here a ``converge server``)
uses that process's server. When the owner stops while the run still works, the run now
serves the directory itself on the same port: its connection reconnects to the same
streams and the run completes every task once. It used to lose its broker and fail
with "Connection lost".
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(300)]

TASKS = 3000


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "converge", *args],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, CONVERGE_CONFIG=""),
    )


async def _output(*args: str) -> str:
    proc = await _spawn(*args)
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


@pytest.mark.asyncio
async def test_a_run_takes_the_server_over_when_its_owner_stops(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    owner = await _spawn("server", "--data-dir", data, "--port", "0")
    run: asyncio.subprocess.Process | None = None
    try:
        assert owner.stdout is not None
        async with asyncio.timeout(60):
            line = (await owner.stdout.readline()).decode()
        url = re.search(r"nats://\S+", line)
        assert url, line
        run = await _spawn("run", "--agents", "2", "--tasks", str(TASKS), "--data-dir", data)
        assert run.stderr is not None and run.stdout is not None
        said: list[str] = []
        async with asyncio.timeout(120):  # until the run uses the owner's server and works
            while True:
                raw = await run.stderr.readline()
                assert raw, "the run ended early: " + "".join(said)
                said.append(raw.decode())
                if raw.startswith(b"tasks done: ") and not raw[12:].startswith(b"0/"):
                    break
        assert any("using its server" in line for line in said), said
        owner.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            assert await owner.wait() == 0
        async with asyncio.timeout(180):
            out, rest = await run.communicate()
        err = "".join(said) + rest.decode()
        assert run.returncode == 0, err[-3000:]
        assert f"serving it here at {url.group(0)}" in err, err[-3000:]
        summary = orjson.loads(out.decode().strip().splitlines()[-1])
        assert summary["states"] == {"completed": TASKS}
    finally:
        for proc in (run, owner):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()

    # The stream, read back: every task completed, and reported exactly once.
    rows = orjson.loads(await _output("tasks", "ls", "--data-dir", data, "--json"))
    assert Counter(row["state"] for row in rows) == {"completed": TASKS}
    replayed = await _output("replay", "--stream", "tasks", "--data-dir", data)
    types = Counter(orjson.loads(line)["type"] for line in replayed.splitlines())
    assert types["task.submitted"] == TASKS
    assert types["task.reported"] == TASKS
