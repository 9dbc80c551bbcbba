"""The runtime's decide step: pending tasks, bounded ``decide`` and its result checked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence

from converge.core.agent import maybe_await
from converge.core.decisions import Decision, SendMessage
from converge.core.message import Message
from converge.core.task import Task
from converge.errors import ConvergeError
from converge.runtime._intents import claims_of_others
from converge.runtime._state import RuntimeContext, logger

__all__ = ["DecidePart"]


class DecidePart:
    """Call the agent's hooks and ``decide`` with a timeout; keep only real decisions."""

    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx

    def tasks_for_decide(self) -> list[Task]:
        """The PENDING tasks the agent may take, then the ASSIGNED ones it holds."""
        ctx = self.ctx
        tm = ctx.deps.task_manager
        if tm is None:
            return []
        agent_id = ctx.agent.id
        try:
            pm = ctx.deps.pool_manager
            pool_ids = None if pm is None else pm.get_pools_for_agent(agent_id)
            # a copy: a task service may hand out a list it keeps, and this one is extended
            tasks = list(
                tm.list_pending_tasks_for_agent(
                    agent_id, pool_ids=pool_ids, capabilities=ctx.agent.capabilities
                )
            )
            others = claims_of_others(tm)
            if others:  # another agent of this process is about to claim these
                tasks = [t for t in tasks if others.get(t.id, agent_id) == agent_id]
            tasks.extend(tm.list_tasks_held_by(agent_id))
            return tasks
        except Exception as exc:  # a projection read failing skips this tick's tasks
            self.ctx.last_error = f"tasks: {type(exc).__name__}: {exc}"
            logger.warning("agent %s: listing pending tasks failed: %s", self.ctx.agent.id, exc)
            return []

    async def call_hook(self, hook: Callable[[], object], name: str) -> None:
        try:
            async with asyncio.timeout(self.ctx.decide_timeout_sec):
                await maybe_await(hook())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # hooks are user code: log and go on
            logger.warning("agent %s: %s failed: %r", self.ctx.agent.id, name, exc)

    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        try:
            async with asyncio.timeout(self.ctx.decide_timeout_sec):
                raw = await maybe_await(self.ctx.agent.decide(messages, tasks))
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is None or current.cancelling():
                raise
            self.ctx.stats.decide_errors += 1  # decide itself raised CancelledError
            self.ctx.metric("runtime_decide_errors_total")
            logger.warning("agent %s: decide raised CancelledError", self.ctx.agent.id)
            return []
        except TimeoutError:
            self.ctx.stats.decide_timeouts += 1
            self.ctx.metric("runtime_decide_timeouts_total")
            self.ctx.last_error = f"decide timed out after {self.ctx.decide_timeout_sec}s"
            logger.warning(
                "agent %s: decide did not return within %ss; skipping this tick",
                self.ctx.agent.id,
                self.ctx.decide_timeout_sec,
            )
            return []
        except Exception as exc:  # decide is user code: log and go on
            self.ctx.stats.decide_errors += 1
            self.ctx.metric("runtime_decide_errors_total")
            self.ctx.last_error = f"decide: {type(exc).__name__}: {exc}"
            logger.warning("agent %s: decide raised %r", self.ctx.agent.id, exc, exc_info=True)
            return []
        return self._coerce_decisions(raw)

    def _coerce_decisions(self, raw: object) -> list[Decision]:
        if raw is None:
            return []
        if isinstance(raw, Decision | Message):
            raw = [raw]
        if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Iterable):
            self.ctx.stats.junk_decisions += 1
            self.ctx.metric("runtime_junk_decisions_total")
            logger.warning(
                "agent %s: decide returned %s, not a list of decisions; ignored",
                self.ctx.agent.id,
                type(raw).__name__,
            )
            return []
        out: list[Decision] = []
        try:
            items = list(raw)
        except Exception as exc:  # a generator from decide may fail while iterated
            self.ctx.stats.decide_errors += 1
            self.ctx.metric("runtime_decide_errors_total")
            logger.warning("agent %s: iterating decide's result failed: %r", self.ctx.agent.id, exc)
            return []
        for item in items:
            if isinstance(item, Message):
                item = SendMessage(self._signed(item))
            elif isinstance(item, SendMessage) and item.message.signature is None:
                item = SendMessage(self._signed(item.message))
            if isinstance(item, Decision):
                out.append(item)
            else:
                self.ctx.stats.junk_decisions += 1
                self.ctx.metric("runtime_junk_decisions_total")
                logger.warning(
                    "agent %s: decide returned %r, not a Decision; ignored", self.ctx.agent.id, item
                )
        return out

    def _signed(self, message: Message) -> Message:
        if message.signature is not None or message.sender != self.ctx.agent.id:
            return message
        try:
            return self.ctx.agent.sign_message(message)
        except ConvergeError as exc:
            logger.warning(
                "agent %s: cannot sign message %s: %s", self.ctx.agent.id, message.id, exc
            )
            return message
