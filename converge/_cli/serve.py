"""``converge run SPEC...``: serve the user's agents until a signal or ``--duration``.

Each agent gets its own runtime on the shared task and pool managers. A pool named by
a spec is created when missing and every agent of that spec joins it. SIGTERM or
Ctrl-C drains: the runtimes stop claiming, finish or release the tasks in flight
within the drain timeout, unregister from discovery, and the command exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from converge._cli.loader import LoadedSpec
from converge._cli.output import ProgressReporter, console
from converge.config import ConvergeConfig
from converge.core.agent import Agent
from converge.errors import ConvergeError
from events import EventLog, RecordedEvent

if TYPE_CHECKING:
    from converge.security import EventSecurity

__all__ = ["serve_agents"]

logger = logging.getLogger("converge.cli")


async def serve_agents(
    cfg: ConvergeConfig,
    log: EventLog,
    url: str,
    agents: list[tuple[Agent, LoadedSpec]],
    duration: float | None,
    quiet: bool,
    stop: asyncio.Event,
    drain_timeout_sec: float,
    security: EventSecurity | None = None,
) -> dict[str, Any]:
    """Run ``agents`` on ``log`` until ``stop`` is set or ``duration``; return a summary.

    The summary counts the tasks these agents completed and failed while serving. With
    ``security`` the projections verify who signed each event.
    """
    from converge._cli.agents import checkpoint_store, discovery, make_transports
    from converge.coordination.pool_manager import PoolManager
    from converge.coordination.task_manager import TaskManager
    from converge.runtime.loop import AgentRuntime

    started = time.monotonic()
    ids = {agent.id for agent, _ in agents}
    outcomes: Counter[str] = Counter()

    def count(recorded: RecordedEvent) -> None:
        event = recorded.event
        if (
            event.type in ("task.reported", "task.failed")
            and getattr(event, "agent_id", None) in ids
        ):
            outcomes["completed" if event.type == "task.reported" else "failed"] += 1

    tm = TaskManager(log, verifier=security.verifier() if security else None)
    pm = PoolManager(log, verifier=security.verifier() if security else None)
    runtimes: list[AgentRuntime] = []
    transports: list[Any] = []
    await tm.start()
    await pm.start()
    tm.add_listener(count)
    try:
        for pool_id in sorted({spec.pool for _, spec in agents if spec.pool is not None}):
            if pm.get_pool(pool_id) is None:
                with contextlib.suppress(ConvergeError):  # created concurrently elsewhere
                    await pm.create_pool({"id": pool_id})
                await pm.sync()
        for agent, spec in agents:
            if spec.pool is not None and not await pm.join_pool(agent.id, spec.pool):
                raise ConvergeError(
                    f"agent {agent.id[:12]} of {spec.spec!r} may not join {spec.pool!r}"
                )
        discovery_service = discovery(cfg, log)
        store = checkpoint_store(cfg)
        transports = await make_transports(cfg, url, [agent for agent, _ in agents])
        for (agent, _), transport in zip(agents, transports, strict=True):
            runtimes.append(
                AgentRuntime(
                    agent,
                    transport,
                    task_manager=tm,
                    pool_manager=pm,
                    discovery_service=discovery_service,
                    checkpoint_store=store,
                    decision_log=log,
                    tick_interval_sec=cfg.tick_interval_sec,
                    drain_timeout_sec=max(drain_timeout_sec, 0.001),
                )
            )
        for runtime in runtimes:
            await runtime.start()
        if not quiet:
            kinds = Counter(spec.spec for _, spec in agents)
            names = ", ".join(f"{spec} x{n}" for spec, n in kinds.items())
            console(stderr=True).print(
                f"serving {len(agents)} agent(s) ({names}) in namespace {cfg.namespace!r}; "
                "Ctrl-C or SIGTERM drains and stops"
            )
        with ProgressReporter("tasks completed", None, quiet=quiet) as progress:
            while not stop.is_set():
                progress.update(outcomes["completed"])
                if duration is not None and time.monotonic() - started >= duration:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await stop.wait()
            progress.update(outcomes["completed"])
    finally:
        # Drain every runtime at once: each stops claiming, finishes or releases what it
        # holds within its drain timeout, and unregisters.
        results = await asyncio.gather(
            *(r.stop() for r in reversed(runtimes)), return_exceptions=True
        )
        for transport in transports:  # those no runtime started (idempotent for the rest)
            await transport.stop()
        tm.remove_listener(count)
        await pm.stop()
        await tm.stop()
        for result in results:
            if isinstance(result, BaseException):
                logger.error("an agent runtime failed to stop cleanly: %s", result)
    held = [
        task.id for task in tm.tasks() if task.assigned_to in ids and not task.state.is_terminal
    ]
    return {
        "namespace": cfg.namespace,
        "agents": {spec: n for spec, n in Counter(spec.spec for _, spec in agents).items()},
        "agent_ids": sorted(ids),
        "completed": outcomes["completed"],
        "failed": outcomes["failed"],
        "still_assigned": held,
        "rejected_events": tm.runner.rejected_events + pm.runner.rejected_events,
        "seconds": round(time.monotonic() - started, 3),
    }
