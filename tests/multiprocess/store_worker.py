"""A worker process for the store recovery tests: managers on ``FileStore(directory)``.

Usage: ``python store_worker.py MODE DIRECTORY AGENT_ID [COUNT]``; it prints one JSON
document per line. Modes:

* ``seed``: create pool ``p1`` (whitelist admission, democratic governance) with the
  agent as member, register the agent with discovery, submit COUNT tasks, claim every
  second one and report every fourth one; result: ``{task_id: state}``. Then exit.
* ``check``: new managers on the directory, no ``start()``; result: the tasks' states,
  the pool's members and policy types, and the discovered agent ids. Then exit.
* ``race``: print ``{"ready": true}``, wait for a line on stdin, then claim every
  pending task; result: ``{"won": [...]}``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson

from converge.coordination import PoolManager, TaskManager
from converge.core import Task
from converge.extensions.storage.file import FileStore
from converge.network.discovery import AgentDescriptor, DiscoveryService
from converge.policy.admission import WhitelistAdmission
from converge.policy.governance import DemocraticGovernance


def emit(doc: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
    sys.stdout.flush()


async def wait_for_go() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        async with asyncio.timeout(60):
            await reader.readline()
    finally:
        transport.close()


async def seed(directory: str, agent: str, count: int) -> None:
    store = FileStore(directory)
    tm, pm = TaskManager(store), PoolManager(store)
    discovery = DiscoveryService(store=store)
    await pm.create_pool(
        {
            "id": "p1",
            "admission_policy": WhitelistAdmission(whitelist=[agent]),
            "governance": DemocraticGovernance(),
        }
    )
    assert await pm.join_pool(agent, "p1")
    await discovery.register(AgentDescriptor(id=agent, topics=["work"]))
    for i in range(count):
        task_id = await tm.submit(Task(objective=f"task {i}", pool_id="p1"))
        if i % 2 == 0:
            assert await tm.claim(agent, task_id)
        if i % 4 == 0:
            await tm.report(agent, task_id, {"n": i})
    emit({"result": {t.id: t.state.value for t in tm.tasks()}})
    await tm.stop()
    await pm.stop()
    await discovery.stop()


def check(directory: str) -> None:
    store = FileStore(directory)
    tm, pm = TaskManager(store), PoolManager(store)
    discovery = DiscoveryService(store=store)
    pool = pm.get_pool("p1")
    assert pool is not None
    emit(
        {
            "result": {
                "tasks": {t.id: t.state.value for t in tm.tasks()},
                "results": {t.id: t.result for t in tm.tasks() if t.result is not None},
                "agents": sorted(pool.agents),
                "admission": type(pool.admission_policy).__name__,
                "governance": type(pool.governance).__name__,
                "discovered": [d.id for d in discovery.list()],
            }
        }
    )


async def race(directory: str, agent: str) -> None:
    tm = TaskManager(FileStore(directory))
    pending = tm.list_pending_tasks(refresh_from_store=True)
    emit({"ready": True, "pending": len(pending)})
    await wait_for_go()
    won = [task.id for task in pending if await tm.claim(agent, task.id)]
    emit({"result": {"won": won, "conflicts": tm.conflicts}})
    await tm.stop()


if __name__ == "__main__":
    mode, directory, agent_id = sys.argv[1:4]
    if mode == "seed":
        asyncio.run(seed(directory, agent_id, int(sys.argv[4])))
    elif mode == "check":
        check(directory)
    elif mode == "race":
        asyncio.run(race(directory, agent_id))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
