"""The runtime's claim upkeep: sweep expired claims, release held ones at stop."""

from __future__ import annotations

import asyncio
import random
import time

from converge.errors import ConvergeError
from converge.runtime._state import RuntimeContext, logger

__all__ = ["ClaimsPart"]


class ClaimsPart:
    """Keep claims honest: expired ones go back to PENDING, none outlives a clean stop."""

    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx

    def worker_pools(self) -> list[str] | None:
        """Pools whose tasks a worker without its own ``pool_id`` takes (None: any)."""
        ctx = self.ctx
        pm = ctx.deps.pool_manager
        if pm is None:
            return None
        try:
            return list(pm.get_pools_for_agent(ctx.agent.id))
        except ConvergeError as exc:
            logger.warning("agent %s: reading its pools failed: %s", ctx.agent.id, exc)
            return []

    async def sweep(self, interval_sec: float) -> None:
        """Release expired claims now and then; jitter spreads the sweepers of processes."""
        ctx = self.ctx
        tm = ctx.deps.task_manager
        if tm is None:
            return
        rng = random.Random()
        while True:
            await asyncio.sleep(interval_sec * rng.uniform(0.5, 1.5))
            try:
                released = await tm.release_expired_claims()
            except ConvergeError as exc:  # a broker outage: the next sweep tries again
                logger.warning("agent %s: claim sweep failed: %s", ctx.agent.id, exc)
                continue
            if released:
                ctx.metric("runtime_claims_released_total", len(released))

    async def keep_alive(self, wake: asyncio.Event, idle_sec: float) -> None:
        """Heartbeat the claims a ``decide`` agent holds while its runtime is alive.

        Each claim with a TTL is extended once two thirds of its lease are left, so a
        live agent keeps a task however long it holds it; a dead one stops extending.
        ``wake`` is set when the agent claims a task (its first heartbeat may be due
        sooner than ``idle_sec``, the longest wait between looks).
        """
        ctx = self.ctx
        tm = ctx.deps.task_manager
        if tm is None:
            return
        agent_id = ctx.agent.id
        while True:
            now = time.time()
            next_look = now + idle_sec
            for task in tm.list_tasks_held_by(agent_id):
                lease = tm.claim_lease(task.id)
                if lease is None:
                    continue
                expires, ttl = lease
                due = expires - 2 * ttl / 3
                if due <= now:
                    try:
                        await tm.extend_claim(agent_id, task.id)
                    except ConvergeError as exc:  # the broker may be back before the TTL
                        logger.warning(
                            "agent %s: heartbeat of %s failed: %s", agent_id, task.id, exc
                        )
                    due = now + ttl / 3
                next_look = min(next_look, due)
            wake.clear()
            try:
                async with asyncio.timeout(max(0.01, next_look - time.time())):
                    await wake.wait()
            except TimeoutError:
                pass

    async def release_held(self, timeout_sec: float) -> None:
        """Release every claim the agent still holds, so other processes take the tasks."""
        ctx = self.ctx
        tm = ctx.deps.task_manager
        if tm is None:
            return
        agent_id = ctx.agent.id
        held = tm.list_tasks_held_by(agent_id)
        if not held:
            return

        async def release(task_id: str) -> bool:
            try:
                return await tm.release_claim(agent_id, task_id, reason="shutdown")
            except (ConvergeError, OSError) as exc:
                logger.warning("agent %s: release of %s failed: %s", agent_id, task_id, exc)
                return False

        try:
            async with asyncio.timeout(timeout_sec):
                done = await asyncio.gather(*(release(task.id) for task in held))
        except TimeoutError:
            logger.error("agent %s: releasing its claims timed out", agent_id)
            return
        logger.info(
            "agent %s released %d claims at shutdown",
            agent_id,
            sum(done),
            extra={"agent_id": agent_id},
        )
