"""The seed's recovery story: state survives a restart through the store the managers use.

"Pool and task state are restored on restart by constructing PoolManager and
TaskManager with the same store used before shutdown." Here the store keeps the
managers' events (a ``StoreEventLog`` in a ``FileStore`` directory), so:

1. a first process creates a pool, submits tasks, claims and finishes one, then exits;
2. a second process (the restart) builds new managers on the same directory and finds
   the pool (with its admission policy as an object) and every task in its state, with
   no ``start()`` and no broker;
3. an agent runtime in that process finishes the work left over.

Run: ``python examples/seed_recovery.py [DIRECTORY]`` (default: a temporary directory).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from converge.coordination import PoolManager, TaskManager
from converge.core import Agent, Identity, Message, Task, TaskState
from converge.core.decisions import ClaimTask, Decision, ReportTask
from converge.extensions.storage.file import FileStore
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.policy.admission import WhitelistAdmission
from converge.runtime.loop import AgentRuntime

TASKS = 4


class Finisher(Agent):
    """Claims each visible task and reports it done."""

    def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        decisions: list[Decision] = []
        for task in tasks:
            decisions += [ClaimTask(task.id), ReportTask(task.id, {"done_by": "restart"})]
        return decisions


async def before_shutdown(directory: str) -> None:
    store = FileStore(base_path=directory)
    pools, tasks = PoolManager(store=store), TaskManager(store=store)
    await pools.create_pool(
        {"id": "recovery-pool", "admission_policy": WhitelistAdmission(whitelist=["agent-a"])}
    )
    await pools.join_pool("agent-a", "recovery-pool")
    ids = [await tasks.submit(Task(objective=f"step {i}")) for i in range(TASKS)]
    await tasks.claim("agent-a", ids[0])
    await tasks.report("agent-a", ids[0], {"done_by": "first run"})
    await tasks.claim("agent-a", ids[1])  # claimed, never reported: the process "crashes"
    for task in tasks.tasks():
        print(f"before: {task.objective:7} {task.state.value}")
    await tasks.stop()
    await pools.stop()


async def after_restart(directory: str) -> None:
    store = FileStore(base_path=directory)
    pools, tasks = PoolManager(store=store), TaskManager(store=store)
    pool = pools.get_pool("recovery-pool")  # plain reads: no start() needed
    assert pool is not None
    print(
        f"after:  pool {pool.id} members {sorted(pool.agents)}, admission {pool.admission_policy}"
    )
    for task in tasks.tasks():
        print(f"after:  {task.objective:7} {task.state.value}")
    agent = Finisher(Identity.generate())
    runtime = AgentRuntime(
        agent,
        LocalTransport(agent.id, LocalTransportRegistry()),
        pool_manager=pools,
        task_manager=tasks,
    )
    pending = [task.id for task in tasks.list_pending_tasks()]
    async with runtime:
        for task_id in pending:
            await tasks.wait(task_id, timeout=30)
    for task in tasks.tasks():
        print(f"done:   {task.objective:7} {task.state.value} {task.result}")
    assert sum(t.state is TaskState.COMPLETED for t in tasks.tasks()) == TASKS - 1
    await tasks.stop()
    await pools.stop()


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] in ("before", "after"):
        phase = before_shutdown if argv[1] == "before" else after_restart
        asyncio.run(phase(argv[2]))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        directory = argv[1] if len(argv) > 1 else scratch
        for phase_name in ("before", "after"):  # two processes: a real restart
            done = subprocess.run([sys.executable, __file__, phase_name, directory], check=False)
            if done.returncode:
                return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
