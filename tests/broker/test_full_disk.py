"""A full disk: the broker refuses at once, the error says so, SIGTERM ends the processes.

The test mounts a small tmpfs for the data directory when it may (root); otherwise it
caps the embedded server's JetStream store with ``nats_max_file_store``. Either way the
embedded server's ``max_file_store`` stays below what the filesystem holds, so the
broker answers "insufficient resources" instead of a write failing half way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from converge.errors import EventLogError
from events import JetStreamEventLog, TaskSubmitted

pytestmark = [pytest.mark.nats, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WAIT_SEC = 120.0
SHUTDOWN_SEC = 5.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A data directory on an 8 MiB tmpfs, or a capped JetStream store where no mount."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    extra = {} if mounted else {"CONVERGE_NATS_MAX_FILE_STORE": str(2 * 1024 * 1024)}
    try:
        yield mount_point / "state", extra
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGE_")}
    if "CONVERGE_NATS_SERVER" in os.environ:
        env["CONVERGE_NATS_SERVER"] = os.environ["CONVERGE_NATS_SERVER"]
    return {**env, **extra, "CONVERGE_SHUTDOWN_TIMEOUT_SEC": str(SHUTDOWN_SEC)}


async def _spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "converge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )


async def _fill(url: str) -> EventLogError:
    """Append 64 KiB events until the broker refuses; return the refusal."""
    async with await JetStreamEventLog.connect(url, namespace=f"full{uuid.uuid4().hex[:8]}") as log:
        for i in range(10_000):
            event = TaskSubmitted(task={"id": f"t{i}", "payload": "x" * 65536})
            try:
                await log.append(event, subject=f"tasks.t{i}")
            except EventLogError as exc:
                # Refused at once, again: the next append fails the same way, not by a timeout.
                with pytest.raises(EventLogError, match="^disk full"):
                    async with asyncio.timeout(10):
                        await log.append(TaskSubmitted(task={"id": "again"}), subject="tasks.again")
                return exc
    raise AssertionError("the broker never refused an append")


@pytest.mark.asyncio
async def test_full_disk_is_refused_at_once_and_sigterm_ends_every_process(
    small_disk: tuple[Path, dict[str, str]],
) -> None:
    data, extra = small_disk
    env = _env(extra)
    server = await _spawn("server", "--data-dir", str(data), "--port", "0", env=env)
    idle: asyncio.subprocess.Process | None = None
    try:
        assert server.stdout is not None
        line = (await asyncio.wait_for(server.stdout.readline(), WAIT_SEC)).decode()
        found = re.search(r"nats://\S+", line)
        assert found, line
        # A run that is already working when the disk fills up.
        idle = await _spawn("run", "--data-dir", str(data), "--tasks", "0", env=env)
        assert idle.stderr is not None
        async with asyncio.timeout(WAIT_SEC):
            while not (said := await idle.stderr.readline()).startswith(b"running "):
                assert said, "the run ended before it started its agents"

        refusal = await asyncio.wait_for(_fill(found.group(0)), WAIT_SEC)
        message = str(refusal)
        assert "\n" not in message
        assert message.startswith("disk full: JetStream refused event")
        assert "free space on the broker's disk or raise its max_file_store" in message

        # A new run on the full broker (it reuses the server) exits 1 saying why.
        run = await _spawn("run", "--data-dir", str(data), "--tasks", "5", env=env)
        _out, err = await asyncio.wait_for(run.communicate(), WAIT_SEC)
        assert run.returncode == 1, err.decode()
        last = err.decode().strip().splitlines()[-1]
        assert last.startswith("error: disk full: JetStream refused event"), last

        # SIGTERM ends the running one within its shutdown limit (forced past it).
        idle.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(idle.wait(), SHUTDOWN_SEC + 30)
        assert code in (0, 1), (await idle.stderr.read()).decode()
    finally:
        for proc in (idle, server):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError):
            assert await asyncio.wait_for(server.wait(), SHUTDOWN_SEC + 30) == 0
        if idle is not None and idle.returncode is None:
            idle.kill()
            await idle.wait()


@pytest.mark.asyncio
async def test_a_demo_the_disk_fills_under_stops_in_one_line_without_a_flood(
    small_disk: tuple[Path, dict[str, str]],
) -> None:
    """Every append fails alike once the store is full: the run ends, logs stay short."""
    data, extra = small_disk
    env = _env(extra)
    run = await _spawn("run", "--data-dir", str(data), "--agents", "2", "--tasks", "20000", env=env)
    try:
        _out, raw = await asyncio.wait_for(run.communicate(), WAIT_SEC)
    finally:
        if run.returncode is None:
            run.kill()
            await run.wait()
    err = raw.decode()
    lines = err.strip().splitlines()
    assert run.returncode == 1, err[-3000:]
    last = lines[-1]
    assert last.startswith("error: disk full: JetStream refused event"), last
    done = re.search(r"the demo stopped with (\d+)/20000 tasks done", last)
    assert done, last
    # Thousands of refused appends (each agent's, each retry) used to log a line each.
    warnings = [line for line in lines if " - WARNING - " in line or " - ERROR - " in line]
    assert len(warnings) < 40, "\n".join(warnings[:60])
    assert max(len(line) for line in lines) < 2000  # no line listing every decision

    # What was stored stays readable: every task the run counted as done is completed.
    ls = await _spawn("tasks", "ls", "--data-dir", str(data), "--json", env=env)
    out, listing_err = await asyncio.wait_for(ls.communicate(), WAIT_SEC)
    assert ls.returncode == 0, listing_err.decode()[-3000:]
    rows = orjson.loads(out)
    completed = sum(1 for row in rows if row["state"] == "completed")
    assert completed >= int(done.group(1)) > 0
