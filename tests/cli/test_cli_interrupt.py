"""Ctrl-C (or a closed terminal) during ``converge run`` on the embedded server.

A terminal signals its whole foreground process group. The embedded nats-server used
to be in that group, so it stopped at the same instant as the agents it served: their
drain (the last reports, released claims) then waited out every reconnect, and the
command ended after its 15 s shutdown limit with a screen of connection errors. The
server now has its own process group and is stopped after the agents.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(300)]


async def _converge(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "converge", *args],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, CONVERGE_CONFIG=""),
    )
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hang-up"])
async def test_a_signal_to_the_terminal_group_drains_the_agents_then_stops_the_server(
    tmp_path: Path, sig: signal.Signals
) -> None:
    data_dir = str(tmp_path / "data")
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "converge", "run", "--agents", "2", "--tasks", "8000"],
        *["--data-dir", data_dir],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # The submitter's one tick submits every task; on a loaded machine it may take
        # longer than the default 15 s limit to finish, which would force the exit.
        env=dict(os.environ, CONVERGE_CONFIG="", CONVERGE_SHUTDOWN_TIMEOUT_SEC="90"),
        start_new_session=True,  # its own group, as a terminal's foreground job is
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        async with asyncio.timeout(120):  # until some tasks are done
            while True:
                progress = await proc.stderr.readline()
                assert progress, "converge run ended before doing any task"
                if progress.startswith(b"tasks done: ") and not progress[12:].startswith(b"0/"):
                    break
        os.killpg(proc.pid, sig)  # the whole group, as the terminal does
        async with asyncio.timeout(120):
            out, rest = await proc.communicate()
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    err = rest.decode()
    assert proc.returncode == 0, err[-3000:]
    assert "did not finish" not in err, err[-3000:]
    assert "connection error" not in err, err[-3000:]
    summary = orjson.loads(out.decode().strip().splitlines()[-1])
    assert summary["states"].get("completed", 0) > 0
    # counted after the drain: what the workers held is done or released by then
    assert set(summary["states"]) <= {"pending", "completed"}, summary["states"]

    # Nothing was left half done: every stored task is pending or completed, none still
    # claimed by the workers that are gone.
    code, listed, listing_err = await _converge("tasks", "ls", "--data-dir", data_dir, "--json")
    assert code == 0, listing_err[-3000:]
    states = Counter(row["state"] for row in orjson.loads(listed))
    assert set(states) <= {"pending", "completed"}, states
    assert states["completed"] >= summary["states"]["completed"]
