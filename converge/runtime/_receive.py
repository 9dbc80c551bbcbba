"""The runtime's receive task: transport to inbox, verified when a registry is given."""

from __future__ import annotations

import asyncio

from converge.core.message import Message
from converge.errors import ClosedError, ConvergeTimeoutError
from converge.runtime._state import RuntimeContext, logger
from converge.runtime.deps import VerifyingTransport

__all__ = ["ReceivePart"]


class ReceivePart:
    """Feed the inbox from the transport and wake the scheduler per message."""

    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx

    async def _receive_one(self) -> Message:
        ctx = self.ctx
        registry = ctx.deps.identity_registry
        transport = ctx.transport
        if registry is not None and isinstance(transport, VerifyingTransport):
            return await transport.receive_verified(registry, timeout=ctx.receive_timeout_sec)
        return await transport.receive(timeout=ctx.receive_timeout_sec)

    async def run(self) -> None:
        """Receive until the transport closes or the task is cancelled."""
        ctx = self.ctx
        while True:
            try:
                message = await self._receive_one()
            except TimeoutError:
                continue
            except ClosedError:
                logger.info("agent %s: transport closed; receive task ends", ctx.agent.id)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bad message must not end the receive task
                ctx.stats.receive_errors += 1
                ctx.metric("runtime_receive_errors_total")
                ctx.last_error = f"receive: {type(exc).__name__}: {exc}"
                logger.warning("agent %s: receive failed: %s", ctx.agent.id, exc)
                await asyncio.sleep(0.01)  # avoid a hot loop on a persistent failure
                continue
            if not isinstance(message, Message):
                ctx.stats.receive_errors += 1
                ctx.metric("runtime_receive_errors_total")
                logger.warning(
                    "agent %s: transport returned %r, not a Message", ctx.agent.id, message
                )
                continue
            ctx.stats.messages_received += 1
            ctx.metric("runtime_messages_received_total")
            self._record_replay(message)
            try:
                await ctx.inbox.push(message)
            except ConvergeTimeoutError as exc:
                logger.warning("agent %s: %s; message %s dropped", ctx.agent.id, exc, message.id)
            ctx.scheduler.notify()

    def _record_replay(self, message: Message) -> None:
        ctx = self.ctx
        replay_log = ctx.deps.replay_log
        if replay_log is None:
            return
        try:
            replay_log.record_message(message, direction="inbound", agent_id=ctx.agent.id)
        except Exception as exc:  # replay recording never stops receiving
            logger.warning("agent %s: replay log failed: %s", ctx.agent.id, exc)
