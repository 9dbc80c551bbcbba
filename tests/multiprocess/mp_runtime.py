"""A worker process for the multi-process runtime tests: one Worker in an AgentRuntime.

Usage: ``python mp_runtime.py MODE URL NAMESPACE [OPTIONS-JSON]``

Prints one JSON document per line: ``{"ready": true, "agent": ID}`` once running,
``{"claimed": TASK_ID}`` for each claim this worker makes, ``{"stopped": true}`` after a
clean stop. SIGTERM stops the runtime (drain, then release held claims); so does the end
of standard input. A line ``finish`` on standard input lets ``slow`` handles return.
Modes: ``hang`` (handle never returns), ``slow`` (handle returns after ``finish``),
``work`` (handle returns ``{"by": agent_id}`` at once). Options: ``max_concurrency``,
``sweep_sec`` (claim sweep interval), ``drain_sec``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import orjson

from converge.coordination import TaskManager
from converge.core.task import Task
from converge.network.transport.local import LocalTransport, LocalTransportRegistry
from converge.runtime import AgentRuntime
from converge.runtime.worker import Worker
from events import JetStreamEventLog, RecordedEvent, TaskClaimed


def emit(doc: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
    sys.stdout.flush()


class TestWorker(Worker):
    def __init__(self, mode: str, finish: asyncio.Event, max_concurrency: int) -> None:
        super().__init__(max_concurrency=max_concurrency)
        self.mode = mode
        self.finish = finish

    async def handle(self, task: Task) -> dict[str, str]:
        if self.mode == "hang":
            await asyncio.Event().wait()
        elif self.mode == "slow":
            await self.finish.wait()
        return {"by": self.id}


async def read_stdin(finish: asyncio.Event, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while True:
            line = await reader.readline()
            if not line:
                stop.set()
                return
            if line.strip() == b"finish":
                finish.set()
    finally:
        transport.close()


async def main(mode: str, url: str, namespace: str, options: dict[str, Any]) -> None:
    stop = asyncio.Event()
    finish = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    try:
        async with TaskManager(log) as tm:
            worker = TestWorker(mode, finish, int(options.get("max_concurrency", 1)))

            def on_event(recorded: RecordedEvent) -> None:
                event = recorded.event
                if isinstance(event, TaskClaimed) and event.agent_id == worker.id:
                    emit({"claimed": event.task_id})

            tm.add_listener(on_event)
            runtime = AgentRuntime(
                worker,
                LocalTransport(worker.id, LocalTransportRegistry()),
                task_manager=tm,
                claim_sweep_interval_sec=float(options.get("sweep_sec", 5.0)),
                drain_timeout_sec=float(options.get("drain_sec", 10.0)),
                rescan_interval_sec=1.0,
            )
            stdin = asyncio.create_task(read_stdin(finish, stop))
            async with runtime:
                emit({"ready": True, "agent": worker.id})
                await stop.wait()
            stdin.cancel()
            await asyncio.wait({stdin}, timeout=5)
            emit({"stopped": True})
    finally:
        await log.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    opts = orjson.loads(args[3]) if len(args) > 3 else {}
    asyncio.run(main(args[0], args[1], args[2], opts))
