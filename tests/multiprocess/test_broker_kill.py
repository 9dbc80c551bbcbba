"""The broker killed (SIGKILL) three times while three ``converge run`` processes work.

Three OS processes serve ``mp_agents.py`` with ``converge run SPEC --url``, as an
operator runs them, against a nats-server (file store) this test owns: two busy
``Steady`` workers and one idle ``Watcher`` each. The test submits 3,000 tasks in small
batches, never far ahead of the reports; three times during the run it kills the
server with SIGKILL and restarts it on the same port and store directory after a short
outage. Right after each restart a probe task for the watchers is submitted on a fresh
connection. The broker's own clocks (its log's "Server is ready" time, the stream
timestamps of events) say how long after its submission the probe was taken
(``seen_sec``: new work seen; the bound is a second), how long after the broker came
back (``recover_sec``, which also counts the test's own reconnect and submission) and
when each process made its first claim (``resume_sec``: busy workers back at work).

The stream is the judge at the end: every task submitted once, claimed once, reported
once, none left assigned or pending; every process alive, then SIGTERM stops each
cleanly. One line of figures is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from test_multiprocess_tasks import by_task, check_history

from converge.core import Task
from converge.security import EventSecurity
from events import (
    BrokerConfig,
    JetStreamEventLog,
    RecordedEvent,
    TaskClaimed,
    TaskReported,
    TaskSubmitted,
)
from events.server import EmbeddedNatsServer

pytestmark = [pytest.mark.slow, pytest.mark.nats]

APP = Path(__file__).with_name("mp_agents.py")
PROCESSES = 3
TASKS = 3000  # the probes included
KILLS = 3
BATCH = 40
AHEAD = 80  # tasks submitted but not yet reported, at most (plus one batch)
WORK_SEC = 0.01  # each task's handle
OUTAGE_SEC = 0.5  # between the kill and the restart (the scenario, not a wait)
WAIT_SEC = 90.0
# The bound: new work is taken within a second of the broker coming back.
SEEN_WITHIN_SEC = 1.0

_READY = re.compile(rb"\] (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) \[INF\] Server is ready")


class Progress:
    """Which tasks the stream shows claimed and reported, as a subscription sees them."""

    def __init__(self) -> None:
        self.claimed: dict[str, float] = {}
        self.reported: set[str] = set()
        self.changed = asyncio.Event()

    async def handle(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, TaskClaimed):
            self.claimed.setdefault(event.task_id, recorded.time)
        elif isinstance(event, TaskReported):
            self.reported.add(event.task_id)
        self.changed.set()

    async def until(self, predicate: object, what: str) -> None:
        try:
            async with asyncio.timeout(WAIT_SEC):
                while not predicate():  # type: ignore[operator]
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{what}: not within {WAIT_SEC}s ({len(self.reported)} reported)"
            ) from None


def ready_times(log_path: Path) -> list[float]:
    """The broker's "Server is ready" times (its log's local clock), oldest first."""
    return [
        datetime.strptime(m.decode(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
        for m in _READY.findall(log_path.read_bytes())
    ]


class Broker:
    """A nats-server with a file store, killed and restarted on its port and store."""

    def __init__(self, data_dir: Path) -> None:
        self.server = EmbeddedNatsServer(data_dir=data_dir, start_timeout_sec=60)
        self.port = 0

    async def start(self) -> str:
        url = await self.server.start()
        self.port = self.server.port
        return url

    async def kill_and_restart(self, outage_sec: float) -> None:
        await self.server.kill()
        await asyncio.sleep(outage_sec)
        data_dir = self.server.data_dir
        self.server = EmbeddedNatsServer(data_dir=data_dir, port=self.port, start_timeout_sec=60)
        await self.server.start()


@pytest_asyncio.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    owned = Broker(tmp_path / "nats")
    await owned.start()
    try:
        yield owned
    finally:
        await owned.server.stop()


@pytest.mark.asyncio
async def test_broker_kill_9_three_times_during_3000_tasks(
    broker: Broker, namespace: str, tmp_path: Path
) -> None:
    url, store = broker.server.url, broker.server.data_dir
    state = tmp_path / "state"  # the processes' shared data directory: one service key
    security = EventSecurity.signing(state / "keys" / "service.key")
    # The test's own connection retries fast and long: its appends span the outages.
    config = BrokerConfig(servers=[url], reconnect_time_wait_sec=0.1)
    log = await JetStreamEventLog.connect(
        config=config,
        namespace=namespace,
        signer=security.ring,
        publish_timeout_sec=2.0,
        publish_retries=30,
    )
    progress = Progress()
    sub = await log.subscribe(progress.handle, stream="tasks")
    procs: list[asyncio.subprocess.Process] = []
    submitted: list[str] = []
    probes: list[str] = []
    outages: list[float] = []

    async def submit(tasks: list[Task], on: JetStreamEventLog) -> None:
        await on.append_many([(TaskSubmitted(task=t.to_dict()), f"tasks.{t.id}", 0) for t in tasks])
        submitted.extend(t.id for t in tasks)

    async def submitter() -> None:
        n = 0
        while n < TASKS - KILLS:
            await progress.until(lambda: len(submitted) - len(progress.reported) <= AHEAD, "room")
            size = min(BATCH, TASKS - KILLS - n)
            await submit([Task("steady", {"n": n + i, "sec": WORK_SEC}) for i in range(size)], log)
            n += size

    try:
        for i in range(PROCESSES):
            with (tmp_path / f"run{i}.err").open("wb") as errors:
                procs.append(
                    await asyncio.create_subprocess_exec(
                        *(sys.executable, "-m", "converge", "run"),
                        *(f"{APP}:Steady=2", f"{APP}:Watcher"),
                        *("--url", url, "--namespace", namespace),
                        *("--data-dir", str(state), "--drain-timeout", "5", "-q"),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=errors,
                    )
                )
        feeding = asyncio.create_task(submitter())
        loop = asyncio.get_running_loop()
        for kill in range(KILLS):
            mark = (kill + 1) * TASKS // (KILLS + 1)
            await progress.until(lambda m=mark: len(progress.reported) >= m, f"{mark} reported")
            killed_at = loop.time()
            await broker.kill_and_restart(OUTAGE_SEC)
            outages.append(loop.time() - killed_at)
            # A probe on a fresh connection, stored as soon as the broker answers.
            async with await JetStreamEventLog.connect(
                url, namespace=namespace, signer=security.ring
            ) as fresh:
                probe = Task("probe", {"probe": kill})
                await submit([probe], fresh)
            probes.append(probe.id)
            await progress.until(lambda p=probe.id: p in progress.claimed, "probe claimed")
        async with asyncio.timeout(WAIT_SEC):
            await feeding
        await progress.until(lambda: progress.reported >= set(submitted), "all reported")
        alive = [p.returncode is None for p in procs]

        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        summaries = []
        for i, proc in enumerate(procs):
            assert proc.stdout is not None
            async with asyncio.timeout(WAIT_SEC):
                out = await proc.stdout.read()
                code = await proc.wait()
            assert code == 0, (tmp_path / f"run{i}.err").read_text()
            summaries.append(orjson.loads(out.splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        await sub.stop()

    # The stream's history, read back after the run.
    history = await by_task(log)
    await log.close()
    submissions = Counter(
        r.event.task["id"]  # type: ignore[attr-defined]
        for records in history.values()
        for r in records
        if isinstance(r.event, TaskSubmitted)
    )
    reports = Counter(
        r.event.task_id  # type: ignore[attr-defined]
        for records in history.values()
        for r in records
        if isinstance(r.event, TaskReported)
    )
    lost = [t for t in submitted if t not in submissions]
    duplicated = [t for t, n in reports.items() if n > 1]
    stuck = [t for t in submitted if reports[t] == 0]
    ready = ready_times(store / "nats-server.log")
    assert len(ready) == KILLS + 1, ready
    backs = ready[-KILLS:]
    recover, seen = [], []
    for probe_id, back in zip(probes, backs, strict=True):
        submitted_at = history[probe_id][0].time
        claim = next(r for r in history[probe_id] if isinstance(r.event, TaskClaimed))
        recover.append(round(claim.time - back, 3))
        seen.append(round(claim.time - submitted_at, 3))
    claims = sorted(
        (r.time, r.event.agent_id)  # type: ignore[attr-defined]
        for records in history.values()
        for r in records
        if isinstance(r.event, TaskClaimed)
    )
    process_of = {agent: i for i, s in enumerate(summaries) for agent in s["agent_ids"]}
    resume: list[list[float | None]] = []
    for back in backs:
        first: dict[int, float] = {}
        for when, agent in claims:
            if when >= back:
                first.setdefault(process_of[agent], round(when - back, 3))
        resume.append([first.get(i) for i in range(PROCESSES)])
    print(  # noqa: T201 (the figures this test exists to show; run with -s or -rP)
        f"\nbroker kill -9 x{KILLS}: tasks={len(submitted)} lost={len(lost)} "
        f"duplicated={len(duplicated)} stuck={len(stuck)} recover_sec={recover} seen_sec={seen} "
        f"resume_sec={resume} outage_sec={[round(o, 2) for o in outages]} "
        f"processes_alive={sum(alive)}/{PROCESSES}"
    )
    assert len(submitted) == TASKS == len(set(submitted))
    assert lost == [] and duplicated == [] and stuck == []
    assert set(submissions.values()) == {1} and set(submissions) == set(submitted)
    for task_id in submitted:
        check_history(history[task_id])
        claimed = [r for r in history[task_id] if isinstance(r.event, TaskClaimed)]
        assert len(claimed) == 1, f"task {task_id} claimed {len(claimed)} times"
    assert all(alive), f"processes alive before the stop: {alive}"
    assert all(s["still_assigned"] == [] for s in summaries), summaries
    assert sum(s["completed"] for s in summaries) == TASKS
    assert all(None not in per_process for per_process in resume), (resume, summaries)
    assert all(latency <= SEEN_WITHIN_SEC for latency in seen), (
        f"probes submitted after the restarts were claimed {seen}s later (broker clocks), "
        f"above {SEEN_WITHIN_SEC}s"
    )
