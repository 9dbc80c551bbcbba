"""One owner per data directory: the embedded server's lock, reuse and refusal.

The processes here are real OS processes (``python -m converge ...``) on one data
directory; the stream's content after a restart is the judge.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import orjson
import pytest

from events.datadir import DataDirLock
from events.server import DataDirInUseError, EmbeddedNatsServer

pytestmark = [pytest.mark.nats]

ROOT = Path(__file__).resolve().parents[2]
WAIT_SEC = 90.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGE_")}
    if "CONVERGE_NATS_SERVER" in os.environ:
        env["CONVERGE_NATS_SERVER"] = os.environ["CONVERGE_NATS_SERVER"]
    return env


async def _converge(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "converge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_SEC)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _serve(data_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "converge",
        "server",
        "--data-dir",
        str(data_dir),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=_env(),
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), WAIT_SEC)).decode()
    found = re.search(r"nats://\S+", line)
    assert found, line
    return proc, found.group(0)


@pytest.mark.asyncio
async def test_server_command_owns_the_directory_run_reuses_it_nothing_lost(
    tmp_path: Path,
) -> None:
    data = tmp_path / "state"
    server, url = await _serve(data)
    try:
        code, out, err = await _converge(
            "run", "--data-dir", str(data), "--tasks", "40", "--agents", "2", "-q"
        )
        assert code == 0, err
        summary = orjson.loads(out.strip().splitlines()[-1])
        assert summary["states"] == {"completed": 40}
        assert "using its server" in err

        code, out, err = await _converge("server", "--data-dir", str(data), "--port", "0")
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert f"pid {server.pid}" in lines[0] and url in lines[0] and "in use" in lines[0]
    finally:
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), WAIT_SEC) == 0

    # A restart on the same directory (the command's own embedded server) finds every task.
    code, out, err = await _converge("projections", "rebuild", "--data-dir", str(data))
    assert code == 0, err
    summary = orjson.loads(out)
    assert summary["tasks"] == {"total": 40, "by_state": {"completed": 40}}


@pytest.mark.asyncio
async def test_second_embedded_server_reuses_or_refuses_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    owner = EmbeddedNatsServer(data_dir=tmp_path / "nats")
    url = await owner.start()
    try:
        ports = sorted((tmp_path / "nats" / "ports").iterdir())
        assert ports
        refused = EmbeddedNatsServer(data_dir=tmp_path / "nats")
        with pytest.raises(DataDirInUseError, match=f"pid {os.getpid()}.*url {url}") as info:
            await refused.start()
        assert info.value.holder.server_pid == owner.pid
        guest = EmbeddedNatsServer(data_dir=tmp_path / "nats", reuse_running=True)
        assert await guest.start() == url
        assert guest.reused is not None and guest.pid is None
        await guest.stop()
        assert owner.is_running
        assert sorted((tmp_path / "nats" / "ports").iterdir()) == ports
    finally:
        await owner.stop()
    # Released: the next server owns the directory.
    successor = EmbeddedNatsServer(data_dir=tmp_path / "nats")
    await successor.start()
    try:
        assert successor.reused is None and successor.is_running
    finally:
        await successor.stop()


HOLD = """
import fcntl, json, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, json.dumps({"pid": os.getpid(), "server_pid": None, "url": sys.argv[2]}).encode())
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.mark.asyncio
async def test_a_holder_that_does_not_answer_is_named_and_refused(tmp_path: Path) -> None:
    data = tmp_path / "nats"
    data.mkdir()
    dead_url = "nats://127.0.0.1:1"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD,
        str(data / "server.pid"),
        dead_url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), WAIT_SEC) == b"locked\n"
        assert not DataDirLock(data).acquire()
        server = EmbeddedNatsServer(data_dir=data, reuse_running=True, start_timeout_sec=1.0)
        with pytest.raises(DataDirInUseError, match=f"pid {holder.pid}.*does not answer"):
            await server.start()
        code, _out, err = await _converge("streams", "ls", "--data-dir", str(tmp_path))
        assert code == 1
        assert err.strip().count("\n") == 0 and f"pid {holder.pid}" in err
        assert dead_url in err
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        await asyncio.wait_for(holder.wait(), WAIT_SEC)
    lock = DataDirLock(data)
    assert lock.acquire()  # the kernel dropped the holder's lock with its process
    lock.release()


@pytest.mark.asyncio
async def test_a_guest_that_takes_over_serves_the_directory_on_the_same_port(
    tmp_path: Path,
) -> None:
    from events import JetStreamEventLog, TaskSubmitted

    owner = EmbeddedNatsServer(data_dir=tmp_path / "nats")
    url = await owner.start()
    guest = EmbeddedNatsServer(data_dir=tmp_path / "nats", reuse_running=True, take_over=True)
    try:
        assert await guest.start() == url and guest.reused is not None
        log = await JetStreamEventLog.connect(url, namespace="takeover")
        try:
            await log.append(TaskSubmitted(task={"id": "before"}), subject="tasks.before")
            await owner.stop()  # the owner goes first; the guest's log is still open
            # The append waits out the gap: the guest serves the same store on the same port.
            await log.append(TaskSubmitted(task={"id": "after"}), subject="tasks.after")
            assert guest.reused is None and guest.is_running and guest.url == url
            ids = [r.event.task["id"] async for r in log.read(stream="tasks")]  # type: ignore[attr-defined]
            assert ids == ["before", "after"]
        finally:
            await log.close()
        assert not DataDirLock(tmp_path / "nats").acquire()  # the guest owns it now
    finally:
        await guest.stop()
        await owner.stop()
    assert not guest.is_running
    lock = DataDirLock(tmp_path / "nats")
    assert lock.acquire()  # released with the guest's server
    lock.release()


@pytest.mark.asyncio
async def test_a_guest_that_stops_first_leaves_the_owner_alone(tmp_path: Path) -> None:
    owner = EmbeddedNatsServer(data_dir=tmp_path / "nats")
    url = await owner.start()
    try:
        guest = EmbeddedNatsServer(data_dir=tmp_path / "nats", reuse_running=True, take_over=True)
        assert await guest.start() == url
        await guest.stop()  # its watch ends with it: nothing is taken over later
        assert owner.is_running
    finally:
        await owner.stop()
    lock = DataDirLock(tmp_path / "nats")
    assert lock.acquire()
    lock.release()
