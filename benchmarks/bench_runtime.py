"""End-to-end runtime figures on one embedded nats-server, next to the same run's ceiling.

Run: ``python benchmarks/bench_runtime.py [--tasks 2000] [--no-processes]
[--demo-tasks 5000] [--demo-no-verify] [--only PHASE,...] [--profile DIR]
[--latency-rate TASKS_PER_SEC] [--timeline]``

``--only`` runs some phases (``decide``, ``worker``, ``processes``, ``raw``,
``claim``, ``latency``, ``idle``, ``demo``); ``--profile DIR`` writes a cProfile of
each process of the three-process run (workers, submitter, the script's own
manager) to ``DIR``; ``--timeline`` prints, for the process runs, how long the
submitter took and the tasks completed in each 0.1 s (by broker time).

Every figure is read from the streams as the broker stored them:

- **ceiling**: raw nats-py pipelined publish (``asyncio.gather`` over ``js.publish``)
  divided by the events one task costs in the measured runs (task events plus
  decision events), and ``TaskManager`` claim+report with no runtime (4 claimers);
- **end-to-end tasks/s**, from the first ``task.submitted`` to the last
  ``task.reported`` by broker time, all through :class:`AgentRuntime` with decisions
  recorded on the decisions stream: one process with 1 and 4 ``decide()`` agents and
  1 and 4 worker-model agents, then three worker processes fed by a submitter process;
- the process's CPU time per task of each one-process run (submitter included), and
  for the three-process run the CPU time of all its Python processes (from the first
  submission to the last completion) per task: the figures to compare on a shared
  machine, where wall-clock rates swing with the load;
- **latency** submit -> completed (broker timestamps), p50 and p99, with a submitter
  pacing tasks at half the measured worker-model throughput;
- **idle CPU**: 100 idle agents in one process, as a share of one core;
- **the demo**: ``converge run --agents 4 --tasks N -q`` against the same server (its
  own timing: from its start to its last task done; it signs and verifies every event
  by default, ``--demo-no-verify`` passes ``--no-verify``).

Figures, never assertions: compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence

import nats

from converge.coordination import TaskManager
from converge.core import Task
from converge.core.agent import Agent
from converge.core.decisions import ClaimTask, Decision, ReportTask
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import TaskState
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.runtime import AgentRuntime
from converge.runtime.worker import Worker
from events import EmbeddedNatsServer, EventLog, JetStreamEventLog

OBJECTIVE = "bench-echo"
CHUNK = 500


class EchoWorker(Worker):
    """The worker model: the runtime claims, ``handle`` answers, the runtime reports."""

    objectives = (OBJECTIVE,)
    max_concurrency = 16

    async def handle(self, task: Task) -> dict[str, object]:
        return {"echo": task.inputs.get("i")}


class EchoDecider(Agent):
    """A ``decide()`` agent: report what it holds, claim a few of the pending tasks."""

    def __init__(self, claims_per_tick: int = 8) -> None:
        super().__init__(Identity.generate())
        self.claims_per_tick = claims_per_tick

    def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        out: list[Decision] = []
        claims = 0
        for task in tasks:
            if task.state is TaskState.ASSIGNED and task.assigned_to == self.id:
                out.append(ReportTask(task.id, {"echo": task.inputs.get("i")}))
            elif task.state is TaskState.PENDING and claims < self.claims_per_tick:
                out.append(ClaimTask(task.id))
                claims += 1
        return out


def make_tasks(n: int, prefix: str) -> list[Task]:
    return [Task(OBJECTIVE, {"i": i}, id=f"{prefix}{i}") for i in range(n)]


async def submit_all(tm: TaskManager, tasks: Sequence[Task]) -> None:
    for base in range(0, len(tasks), CHUNK):
        await asyncio.gather(*(tm.submit(t) for t in tasks[base : base + CHUNK]))


async def submit_paced(
    tm: TaskManager, tasks: Sequence[Task], rate: float, *, burst_sec: float | None = None
) -> None:
    """Submit ``tasks`` at about ``rate`` per second.

    By default arrivals are a Poisson process (independent clients: exponential gaps,
    seeded so runs compare); each wake-up submits every task that is due, gathered.
    With ``burst_sec`` the tasks come instead in equal bursts every ``burst_sec`` seconds,
    which queues each burst behind itself and so measures the burst as much as the runtime.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    if burst_sec is None:
        gaps = random.Random(13)
        due_at: list[float] = []
        t = 0.0
        for _ in tasks:
            t += gaps.expovariate(rate)
            due_at.append(t)
    else:
        burst = max(1, round(rate * burst_sec))
        due_at = [(k // burst) * burst / rate for k in range(len(tasks))]
    k = 0
    while k < len(tasks):
        delay = started + due_at[k] - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = loop.time() - started
        end = k
        while end < len(tasks) and due_at[end] <= now:
            end += 1
        end = max(end, k + 1)
        await asyncio.gather(*(tm.submit(t) for t in tasks[k:end]))
        k = end


async def wait_done(tm: TaskManager, ids: set[str], timeout: float) -> None:  # noqa: ASYNC109
    """Wait until every task of ``ids`` is terminal in ``tm``'s projection."""
    remaining = {i for i in ids if not _terminal(tm, i)}
    if not remaining:
        return
    done = asyncio.Event()

    def listener(recorded: object) -> None:
        for task_id in list(remaining):
            if _terminal(tm, task_id):
                remaining.discard(task_id)
        if not remaining:
            done.set()

    # A listener that scans every remaining id would cost O(n) per event; check the
    # event's own task first and rescan only occasionally.
    def on_event(recorded: object) -> None:
        task_id = getattr(getattr(recorded, "event", None), "task_id", None)
        if task_id in remaining and _terminal(tm, task_id):
            remaining.discard(task_id)
            if not remaining:
                done.set()

    tm.add_listener(on_event)
    try:
        deadline = time.monotonic() + timeout
        while not done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(remaining)} of {len(ids)} tasks not done in {timeout}s")
            try:
                async with asyncio.timeout(min(1.0, left)):
                    await done.wait()
            except TimeoutError:
                await tm.sync(timeout=30)
                listener(None)
    finally:
        tm.remove_listener(on_event)


async def wait_stored(log: EventLog, events: int, timeout: float) -> None:  # noqa: ASYNC109
    """Wait until the task stream holds ``events`` events (3 per task: submitted, claimed,
    reported; a claim that loses its race is never stored), polling its last sequence."""
    async with asyncio.timeout(timeout):
        # Polling the broker is the point here: nothing in this process is told of new events.
        while await log.last_sequence(stream="tasks") < events:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _server_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) the nats-server process ``pid`` has used, from /proc."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _terminal(tm: TaskManager, task_id: str) -> bool:
    task = tm.get_task(task_id)
    return task is not None and task.state.is_terminal


async def broker_figures(log: EventLog, ids: set[str]) -> dict[str, object]:
    """Read the task stream back: rate, latencies, duplicates, from broker timestamps."""
    submitted: dict[str, float] = {}
    reported: dict[str, float] = {}
    duplicates = 0
    async for recorded in log.read(stream="tasks"):
        event = recorded.event
        task_id = getattr(event, "task_id", None)
        if event.type == "task.submitted":
            task_id = event.task["id"]  # type: ignore[attr-defined]
            if task_id in ids:
                submitted[task_id] = recorded.time
        elif event.type == "task.reported" and task_id in ids:
            if task_id in reported:
                duplicates += 1
            reported[task_id] = recorded.time
    decisions = 0
    async for _ in log.read(stream="decisions"):
        decisions += 1
    span = max(reported.values()) - min(submitted.values()) if reported else float("nan")
    first = min(submitted.values(), default=0.0)
    timeline = [0] * (int(span * 10) + 1 if reported else 0)
    for t in reported.values():
        timeline[min(len(timeline) - 1, int((t - first) * 10))] += 1
    latencies = sorted(reported[t] - submitted[t] for t in reported if t in submitted)
    return {
        "tasks": len(ids),
        "completed": len(reported),
        "duplicates": duplicates,
        "seconds": span,
        "rate": len(reported) / span if span else float("nan"),
        "latencies": latencies,
        "decision_events": decisions,
        "submit_seconds": max(submitted.values(), default=first) - first,
        "timeline": timeline,
    }


async def count_task_events(log: EventLog) -> int:
    n = 0
    async for _ in log.read(stream="tasks"):
        n += 1
    return n


async def in_process(url: str, kind: str, agents: int, n: int) -> dict[str, object]:
    """Run ``agents`` agents of ``kind`` through AgentRuntime on a fresh namespace."""
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    runtimes: list[AgentRuntime] = []
    try:
        async with TaskManager(log) as tm:
            registry = LocalTransportRegistry()
            for _ in range(agents):
                agent: Agent = EchoWorker() if kind == "worker" else EchoDecider()
                runtimes.append(
                    AgentRuntime(
                        agent,
                        LocalTransport(agent.id, registry),
                        task_manager=tm,
                        decision_log=log,
                    )
                )
            for runtime in runtimes:
                await runtime.start()
            tasks = make_tasks(n, "t")
            cpu = time.process_time()
            await submit_all(tm, tasks)
            await wait_done(tm, {t.id for t in tasks}, timeout=600)
            cpu = time.process_time() - cpu
            for runtime in runtimes:
                await runtime.stop()
            runtimes.clear()
            figures = await broker_figures(log, {t.id for t in tasks})
            events = await count_task_events(log) + int(figures["decision_events"])  # type: ignore[call-overload]
            figures["events_per_task"] = events / n
            figures["cpu_us_per_task"] = cpu / n * 1e6
            return figures
    finally:
        for runtime in runtimes:
            await runtime.stop()
        await log.close()


async def latency_at(
    url: str, rate: float, n: int, burst_sec: float | None = None
) -> dict[str, object]:
    """Four worker-model agents; a paced submitter at ``rate`` tasks/s (see submit_paced)."""
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    runtimes: list[AgentRuntime] = []
    try:
        async with TaskManager(log) as tm:
            registry = LocalTransportRegistry()
            for _ in range(4):
                agent = EchoWorker()
                runtimes.append(
                    AgentRuntime(
                        agent, LocalTransport(agent.id, registry), task_manager=tm, decision_log=log
                    )
                )
            for runtime in runtimes:
                await runtime.start()
            tasks = make_tasks(n, "l")
            await submit_paced(tm, tasks, rate, burst_sec=burst_sec)
            await wait_done(tm, {t.id for t in tasks}, timeout=600)
            return await broker_figures(log, {t.id for t in tasks})
    finally:
        for runtime in runtimes:
            await runtime.stop()
        await log.close()


async def idle_cpu(url: str, agents: int, seconds: float) -> float:
    """Return the CPU share of one core that ``agents`` idle agents cost."""
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    runtimes: list[AgentRuntime] = []
    try:
        async with TaskManager(log) as tm:
            registry = LocalTransportRegistry()
            for k in range(agents):
                agent: Agent = EchoWorker() if k % 2 else EchoDecider()
                runtimes.append(
                    AgentRuntime(
                        agent, LocalTransport(agent.id, registry), task_manager=tm, decision_log=log
                    )
                )
            for runtime in runtimes:
                await runtime.start()
            await asyncio.sleep(1.0)  # let start-up work settle before measuring
            cpu0, wall0 = time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            return (time.process_time() - cpu0) / (time.monotonic() - wall0)
    finally:
        for runtime in runtimes:
            await runtime.stop()
        await log.close()


async def raw_pipelined(url: str, n: int) -> float:
    """Raw nats-py: ``asyncio.gather`` over ``js.publish`` in chunks; messages/s."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        name = f"RAW{uuid.uuid4().hex[:8].upper()}"
        await js.add_stream(name=name, subjects=[f"{name}.>"])
        body = b'{"type":"task.submitted","task":{"id":"x","objective":"bench-echo"}}'
        started = time.perf_counter()
        for base in range(0, n, CHUNK):
            await asyncio.gather(
                *(js.publish(f"{name}.t{i}", body) for i in range(base, min(n, base + CHUNK)))
            )
        elapsed = time.perf_counter() - started
        await js.delete_stream(name)
        return n / elapsed
    finally:
        await nc.close()


async def claim_report_no_runtime(url: str, claimers: int, n: int) -> float:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    try:
        async with TaskManager(log) as tm:
            await submit_all(tm, make_tasks(n, "c"))

            async def claimer(k: int) -> int:
                name = f"claimer-{k}"
                done = 0
                while pending := tm.list_pending_tasks():
                    task = pending[(k * len(pending)) // claimers]
                    if await tm.claim(name, task.id):
                        await tm.report(name, task.id, {"ok": True})
                        done += 1
                return done

            started = time.perf_counter()
            counts = await asyncio.gather(*(claimer(k) for k in range(claimers)))
            elapsed = time.perf_counter() - started
            assert sum(counts) == n, counts
            return n / elapsed
    finally:
        await log.close()


# -- processes ---------------------------------------------------------------------


async def role_worker(url: str, namespace: str, agents: int, profile_dir: str | None) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    runtimes: list[AgentRuntime] = []
    try:
        async with TaskManager(log) as tm:
            registry = LocalTransportRegistry()
            for _ in range(agents):
                agent = EchoWorker()
                runtimes.append(
                    AgentRuntime(
                        agent, LocalTransport(agent.id, registry), task_manager=tm, decision_log=log
                    )
                )
            for runtime in runtimes:
                await runtime.start()
            print("ready", flush=True)
            profiler = _profiler(profile_dir)
            cpu = time.process_time()
            await stop.wait()
            print(f"cpu {time.process_time() - cpu}", flush=True)
            print(f"races {tm.conflicts} {tm.runner.resyncs}", flush=True)
            _dump(profiler, profile_dir, "worker")
    finally:
        for runtime in runtimes:
            await runtime.stop()
        await log.close()


async def role_submitter(url: str, namespace: str, n: int, profile_dir: str | None) -> None:
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    try:
        async with TaskManager(log) as tm:
            profiler = _profiler(profile_dir)
            cpu = time.process_time()
            await submit_all(tm, make_tasks(n, "p"))
            print(f"cpu {time.process_time() - cpu}", flush=True)
            _dump(profiler, profile_dir, "submitter")
    finally:
        await log.close()


async def _cpu_line(proc: asyncio.subprocess.Process) -> float:
    """Read the ``cpu <seconds>`` line a role prints (0.0 when it printed none)."""
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        while line := await proc.stdout.readline():
            if line.startswith(b"cpu "):
                return float(line.split()[1])
    return 0.0


async def across_processes(
    url: str,
    workers: int,
    n: int,
    profile_dir: str | None = None,
    server_pid: int | None = None,
    agents: int = 1,
) -> dict[str, object]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    me = [sys.executable, os.path.abspath(__file__), "--url", url, "--namespace", namespace]
    if profile_dir:
        me += ["--profile", profile_dir]
    pipe = asyncio.subprocess.PIPE
    procs = [
        await asyncio.create_subprocess_exec(
            *me, "--role", "worker", "--agents", str(agents), stdout=pipe
        )
        for _ in range(workers)
    ]
    cpu_by_role: dict[str, float] = {}
    try:
        for proc in procs:
            assert proc.stdout is not None
            async with asyncio.timeout(60):
                line = await proc.stdout.readline()
            assert line.strip() == b"ready", line
        log = await JetStreamEventLog.connect(url, namespace=namespace)
        try:
            # The script's own process only watches the stream's last sequence: following
            # the task projection live would add a fifth process folding every event, on
            # the same two cores the measured processes share.
            server_before = _server_cpu(server_pid)
            submitter = await asyncio.create_subprocess_exec(
                *me, "--role", "submitter", "--tasks", str(n), stdout=pipe
            )
            cpu_by_role["submitter"] = await _cpu_line(submitter)
            async with asyncio.timeout(600):
                assert await submitter.wait() == 0
            await wait_stored(log, 3 * n, timeout=600)
            server_after = _server_cpu(server_pid)
            for proc in procs:
                proc.terminate()
            races = [0, 0]
            for k, proc in enumerate(procs):
                cpu_by_role[f"worker {k + 1}"] = await _cpu_line(proc)
                assert proc.stdout is not None
                async with asyncio.timeout(60):
                    words = (await proc.stdout.readline()).split()
                if words[:1] == [b"races"]:
                    races = [races[0] + int(words[1]), races[1] + int(words[2])]
            figures = await broker_figures(log, {f"p{i}" for i in range(n)})
            figures["cpu_us_per_task"] = sum(cpu_by_role.values()) / n * 1e6
            figures["cpu_by_role"] = cpu_by_role
            figures["server_us_per_task"] = (
                (server_after - server_before) / n * 1e6
                if server_before is not None and server_after is not None
                else float("nan")
            )
            figures["lost_races"], figures["gap_reads"] = races
            return figures
        finally:
            await log.close()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()


def _profiler(profile_dir: str | None) -> cProfile.Profile | None:
    if not profile_dir:
        return None
    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def _dump(profiler: cProfile.Profile | None, profile_dir: str | None, role: str) -> None:
    if profiler is not None and profile_dir:
        profiler.disable()
        os.makedirs(profile_dir, exist_ok=True)
        profiler.dump_stats(os.path.join(profile_dir, f"{role}-{os.getpid()}.prof"))


async def demo(url: str, n: int, verify: bool) -> dict[str, object]:
    """Run the demo (``converge run``) on ``url`` in a new namespace; its JSON summary."""
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as data_dir:
        args = ["run", "--url", url, "--namespace", namespace, "--data-dir", data_dir]
        args += ["--agents", "4", "--tasks", str(n), "-q"]
        if not verify:
            args.append("--no-verify")
        converge = os.path.join(os.path.dirname(sys.executable), "converge")
        proc = await asyncio.create_subprocess_exec(converge, *args, stdout=asyncio.subprocess.PIPE)
        async with asyncio.timeout(900):
            out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert isinstance(summary, dict)
    return summary


def _row(label: str, figures: dict[str, object]) -> str:
    return (
        f"{label:<34} {figures['rate']:>9,.0f} tasks/s  "
        f"({figures['completed']}/{figures['tasks']} done, {figures['duplicates']} twice, "
        f"{figures['seconds']:.2f} s by broker time)"
    )


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


PHASES = ("decide", "worker", "processes", "raw", "claim", "latency", "idle", "demo")


async def main(
    n: int,
    timeline: bool,
    phases: set[str],
    demo_tasks: int,
    demo_verify: bool,
    profile_dir: str | None,
    latency_rate: float | None,
) -> None:
    async with EmbeddedNatsServer() as server:
        url = server.url
        print(f"tasks per run: {n}; nats-server at {url} (file storage)")
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        results: dict[tuple[str, int], dict[str, object]] = {}
        for kind in ("decide", "worker"):
            if kind not in phases:
                continue
            for agents in (1, 4):
                results[kind, agents] = figures = await in_process(url, kind, agents, n)
                print(
                    _row(f"one process, {agents} {kind}() agent(s)", figures)
                    + f", {figures['cpu_us_per_task']:,.0f} us CPU/task"
                )
        if "processes" in phases:
            # The shape (three worker processes, one agent each), then the same four
            # agents in one worker process: each process folds every event, so on a small
            # machine fewer, fuller processes leave more CPU to the work.
            for workers, agents in ((3, 1), (1, 4)):
                figures = await across_processes(url, workers, n, profile_dir, server.pid, agents)
                shape = (
                    f"{workers} worker processes"
                    if agents == 1
                    else f"{workers} worker process x {agents} agents"
                )
                print(
                    _row(f"{shape} + submitter", figures)
                    + f", {figures['cpu_us_per_task']:,.0f} us CPU/task (all processes)"
                )
                by_role = figures["cpu_by_role"]
                assert isinstance(by_role, dict)
                print(
                    "  CPU us/task by process: "
                    + ", ".join(f"{role} {cpu / n * 1e6:,.0f}" for role, cpu in by_role.items())
                    + f"; nats-server {figures['server_us_per_task']:,.0f}"
                    + f"; workers lost {figures['lost_races']} claim races, "
                    f"read {figures['gap_reads']} gaps from the log"
                )
                if timeline:
                    print(
                        f"  submitted in {figures['submit_seconds']:.2f} s; completed per 0.1 s: "
                        + " ".join(str(c) for c in figures["timeline"])  # type: ignore[attr-defined]
                    )
        if "raw" in phases:
            raw = await raw_pipelined(url, 20_000)
            print(f"raw nats-py pipelined publish      {raw:>9,.0f} msgs/s")
            for kind in ("decide", "worker"):
                if (kind, 4) not in results:
                    continue
                ept = float(results[kind, 4]["events_per_task"])  # type: ignore[arg-type]
                e2e = float(results[kind, 4]["rate"])  # type: ignore[arg-type]
                print(
                    f"ceiling {kind:<6} ({ept:.1f} events/task)    {raw / ept:>9,.0f} tasks/s"
                    f"   ratio e2e(4 agents)/ceiling {e2e / (raw / ept):.0%}"
                )
        if "claim" in phases:
            no_runtime = await claim_report_no_runtime(url, 4, n)
            print(f"TaskManager claim+report, no runtime {no_runtime:>7,.0f} tasks/s (4 claimers)")
        if "latency" in phases:
            if latency_rate:
                half = latency_rate
            elif ("worker", 4) in results:
                half = float(results["worker", 4]["rate"]) / 2  # type: ignore[arg-type]
            else:
                half = 1300.0
            for arrivals, burst_sec in (("Poisson arrivals", None), ("bursts every 20 ms", 0.02)):
                lat = await latency_at(url, half, max(500, int(half * 5)), burst_sec)
                latencies = lat["latencies"]
                assert isinstance(latencies, list)
                print(
                    f"latency at {half:,.0f} tasks/s (half load), {arrivals}: "
                    f"p50 {_pct(latencies, 0.5):.1f} ms, p99 {_pct(latencies, 0.99):.1f} ms, "
                    f"mean {statistics.fmean(latencies) * 1000:.1f} ms"
                )
        if "idle" in phases:
            share = await idle_cpu(url, 100, 10.0)
            print(f"idle: 100 agents in one process use {share:.1%} of a core")
        if demo_tasks and "demo" in phases:
            summary = await demo(url, demo_tasks, demo_verify)
            seconds = float(summary["seconds"])  # type: ignore[arg-type]
            print(
                f"demo: converge run --agents 4 --tasks {demo_tasks}"
                f"{'' if demo_verify else ' --no-verify'}: {demo_tasks / seconds:,.0f} tasks/s "
                f"({seconds:.1f} s, states {summary['states']})"
            )
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2_000)
    parser.add_argument("--no-processes", action="store_true")
    parser.add_argument("--role", choices=["worker", "submitter"])
    parser.add_argument("--url")
    parser.add_argument("--namespace")
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--demo-tasks", type=int, default=5_000, help="0: no demo run")
    parser.add_argument("--demo-no-verify", action="store_true")
    parser.add_argument("--only", help=f"comma-separated phases of {', '.join(PHASES)}")
    parser.add_argument(
        "--timeline", action="store_true", help="print completions per 0.1 s of the process runs"
    )
    parser.add_argument("--profile", help="write cProfile files of the process run here")
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="tasks/s of the latency run (default: half the 4-worker rate, else 1300)",
    )
    args = parser.parse_args()
    if args.role == "worker":
        asyncio.run(role_worker(args.url, args.namespace, args.agents, args.profile))
    elif args.role == "submitter":
        asyncio.run(role_submitter(args.url, args.namespace, args.tasks, args.profile))
    else:
        chosen = set(PHASES) if not args.only else set(args.only.split(","))
        if unknown := chosen - set(PHASES):
            parser.error(f"unknown phases {sorted(unknown)}; choose from {', '.join(PHASES)}")
        if args.no_processes:
            chosen.discard("processes")
        asyncio.run(
            main(
                args.tasks,
                args.timeline,
                chosen,
                args.demo_tasks,
                not args.demo_no_verify,
                args.profile,
                args.latency_rate,
            )
        )
