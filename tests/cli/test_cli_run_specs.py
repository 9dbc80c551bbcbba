"""``converge run SPEC...``: a user's agent module served by two OS processes on one
server, tasks submitted with ``converge tasks submit``, each completed exactly once."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from converge.cli import app
from events import JetStreamEventLog, RecordedEvent

APP = Path(__file__).resolve().parent / "apps" / "shouty.py"
WAIT_SEC = 90.0

runner = CliRunner()


async def _converge(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "converge",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT_SEC):
        out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Watch:
    """Collect the events of one stream as they arrive; wait for a condition on them."""

    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self.changed = asyncio.Event()

    async def handle(self, recorded: RecordedEvent) -> None:
        self.events.append(recorded)
        self.changed.set()

    async def until(self, predicate: object, what: str) -> None:
        async with asyncio.timeout(WAIT_SEC):
            while not predicate(self.events):  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


def _types(events: list[RecordedEvent], kind: str) -> list[RecordedEvent]:
    return [r for r in events if r.event.type == kind]


@pytest.mark.nats
@pytest.mark.slow
@pytest.mark.asyncio
async def test_two_processes_serve_a_user_module_each_task_once(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    common = ("--url", nats_url, "--namespace", namespace)
    log = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    agents, tasks = Watch(), Watch()
    subs = [
        await log.subscribe(agents.handle, stream="agents"),
        await log.subscribe(tasks.handle, stream="tasks"),
    ]
    procs = []
    try:
        for i in range(2):
            with (tmp_path / f"run{i}.err").open("wb") as errors:
                procs.append(
                    await asyncio.create_subprocess_exec(
                        *(sys.executable, "-m", "converge", "run", f"{APP}:Shouter"),
                        *("--count", "2", *common),
                        stdout=asyncio.subprocess.PIPE,
                        stderr=errors,
                    )
                )
        await agents.until(lambda ev: len(_types(ev, "agent.registered")) >= 4, "registered")

        texts = [f"hello {i}" for i in range(12)]
        lines = b"".join(
            orjson.dumps({"objective": "shout", "inputs": {"text": t}}) + b"\n" for t in texts
        )
        code, out, err = await _converge("tasks", "submit", "--file", "-", *common, stdin=lines)
        assert code == 0, err
        ids = out.split()
        assert len(ids) == len(texts)

        await tasks.until(lambda ev: len(_types(ev, "task.reported")) >= len(ids), "reported")
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        summaries = []
        for proc in procs:
            assert proc.stdout is not None
            async with asyncio.timeout(WAIT_SEC):
                out_bytes = await proc.stdout.read()
                assert await proc.wait() == 0, (tmp_path / "run0.err").read_text()
            summaries.append(orjson.loads(out_bytes.splitlines()[-1]))
        await agents.until(lambda ev: len(_types(ev, "agent.unregistered")) >= 4, "gone")
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for sub in subs:
            await sub.stop()

    assert sum(s["completed"] for s in summaries) == len(ids)
    assert all(s["still_assigned"] == [] for s in summaries)
    assert all(len(s["agent_ids"]) == 2 for s in summaries)

    # Read back from the stream: every task reported exactly once, by one of the agents.
    reported = [r.event async for r in log.read(stream="tasks") if r.event.type == "task.reported"]
    await log.close()
    assert Counter(e.task_id for e in reported) == Counter(ids)  # type: ignore[attr-defined]
    workers = {a for s in summaries for a in s["agent_ids"]}
    assert {e.agent_id for e in reported} <= workers  # type: ignore[attr-defined]
    by_id = {e.task_id: e.result for e in reported}  # type: ignore[attr-defined]
    assert [by_id[i] for i in ids] == [t.upper() + "!" for t in texts]


@pytest.mark.nats
def test_config_agents_list_with_options_and_pool(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    config = tmp_path / "converge.yaml"
    config.write_text(
        f"nats_url: {nats_url}\nnamespace: {namespace}\n"
        f"agents:\n  - class: {APP}:Shouter\n    count: 2\n    pool: loud\n"
        "    options: {suffix: '?!'}\n"
    )
    result = runner.invoke(app, ["run", "--config", str(config), "--duration", "0.5", "-q"])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout.splitlines()[-1])
    assert summary["agents"] == {f"{APP}:Shouter": 2} and summary["still_assigned"] == []
    result = runner.invoke(app, ["pools", "show", "loud", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert sorted(orjson.loads(result.stdout)["agents"]) == summary["agent_ids"]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (f"{APP}:Broken", "no microphone"),
        (f"{APP}:NOT_AN_AGENT", "not an Agent"),
        (f"{APP}:Nope", "has no 'Nope'"),
        ("no_such_module_xyz:Agent", "no module named 'no_such_module_xyz'"),
        ("tests/nowhere.py:Agent", "no file"),
        (f"{APP}:Shouter=0", "count"),
        ("nocolon", "package.module:Class"),
    ],
)
def test_a_spec_that_cannot_load_exits_2_naming_it(spec: str, needle: str) -> None:
    result = runner.invoke(app, ["run", spec, "--url", "nats://127.0.0.1:1"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert needle in lines[0] and spec.split("=")[0] in lines[0]


@pytest.mark.nats
def test_demo_workers_leave_a_users_task_alone(nats_url: str, namespace: str) -> None:
    common = ["--url", nats_url, "--namespace", namespace]
    result = runner.invoke(app, ["tasks", "submit", "shout", "--input", '{"text": "x"}', *common])
    assert result.exit_code == 0, result.output
    user_task = result.stdout.strip()
    result = runner.invoke(app, ["run", *common, "-n", "2", "-t", "3", "-d", "60", "-q"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout.splitlines()[-1])["states"] == {"completed": 3}
    result = runner.invoke(app, ["tasks", "show", user_task, "--json", *common])
    assert result.exit_code == 0, result.output
    shown = orjson.loads(result.stdout)
    assert shown["state"] == "pending" and [e["type"] for e in shown["events"]] == [
        "task.submitted"
    ]


@pytest.mark.nats
@pytest.mark.slow
@pytest.mark.asyncio
async def test_sigterm_drains_and_releases_the_task_in_flight(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    from converge.coordination.task_manager import TaskManager
    from converge.core.task import Task, TaskState
    from converge.security import EventSecurity

    # the run verifies: submit as an operator, signed with its data directory's service key
    state = tmp_path / "state"
    security = EventSecurity.signing(state / "keys" / "service.key")
    log = await JetStreamEventLog.connect(nats_url, namespace=namespace, signer=security.ring)
    tasks = Watch()
    sub = await log.subscribe(tasks.handle, stream="tasks")
    with (tmp_path / "run.err").open("wb") as errors:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "converge", "run", f"{APP}:Sleeper", "--drain-timeout", "1"),
            *("--url", nats_url, "--namespace", namespace, "--data-dir", str(state)),
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
        )
    try:
        async with TaskManager(log) as tm:
            task_id = await tm.submit(Task("nap"))
            await tasks.until(lambda ev: bool(_types(ev, "task.claimed")), "claimed")
            proc.send_signal(signal.SIGTERM)
            assert proc.stdout is not None
            async with asyncio.timeout(WAIT_SEC):
                out = await proc.stdout.read()
                assert await proc.wait() == 0, (tmp_path / "run.err").read_text()
            await tasks.until(lambda ev: bool(_types(ev, "task.claim_released")), "released")
            await tm.sync()
            task = tm.get_task(task_id)
            assert task is not None and task.state is TaskState.PENDING
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sub.stop()
        await log.close()
    summary = orjson.loads(out.splitlines()[-1])
    assert summary["still_assigned"] == [] and summary["completed"] == 0
