"""A worker process for the multi-process tests: one TaskManager on a real JetStream.

Usage: ``python mp_worker.py MODE URL NAMESPACE AGENT_ID [OPTIONS-JSON]``

Protocol on stdio (one JSON document per line): the worker prints ``{"ready": true}``
once its manager has caught up, waits for a line on stdin ("go"), does its work and
prints ``{"result": ...}``. Modes:

* ``claim``: try to claim every task (in stream order); result: ``{"won": [...],
  "lost": [...]}``.
* ``sweep``: ``release_expired_claims(now=options["now"])``; result: the released ids.
* ``work``: release expired claims (with ``options["now"]`` when given), then claim and
  report every pending task, printing ``{"done": task_id}`` after each report; result:
  the projection's snapshot. ``options["snapshot_dir"]`` names a FileStore for
  projection snapshots (``options["snapshot_every"]`` events apart).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson

from converge.coordination import TaskManager
from converge.extensions.storage.file import FileStore
from events import JetStreamEventLog


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


async def main(mode: str, url: str, namespace: str, agent_id: str, options: dict[str, Any]) -> None:
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    store = None
    if options.get("snapshot_dir"):
        store = FileStore(options["snapshot_dir"], fsync=False)
    try:
        tm = TaskManager(
            log, snapshot_store=store, snapshot_every=int(options.get("snapshot_every", 10_000))
        )
        async with tm:
            await tm.sync(timeout=30)
            emit(
                {
                    "ready": True,
                    "restored": tm.runner.restored_from_snapshot,
                    "applied": tm.runner.applied_events,
                }
            )
            await wait_for_go()
            if mode == "claim":
                won: list[str] = []
                lost: list[str] = []
                for task in tm.tasks():
                    (won if await tm.claim(agent_id, task.id) else lost).append(task.id)
                emit({"result": {"won": won, "lost": lost, "conflicts": tm.conflicts}})
            elif mode == "sweep":
                released = await tm.release_expired_claims(now=float(options["now"]))
                emit({"result": released})
            elif mode == "work":
                if "now" in options:
                    await tm.release_expired_claims(now=float(options["now"]))
                while True:
                    pending = tm.list_pending_tasks()
                    if not pending:
                        break
                    for task in pending:
                        if await tm.claim(agent_id, task.id):
                            await tm.report(agent_id, task.id, {"by": agent_id})
                            emit({"done": task.id})
                await tm.sync(timeout=30)
                emit({"result": tm.projection.snapshot()})
            else:
                raise SystemExit(f"unknown mode {mode!r}")
    finally:
        await log.close()
        if store is not None:
            store.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    opts = orjson.loads(args[4]) if len(args) > 4 else {}
    asyncio.run(main(args[0], args[1], args[2], args[3], opts))
