"""The runtime's receive task: transport to inbox, verified when a registry is given."""

from __future__ import annotations

import asyncio

from converge.core.message import Message
from converge.errors import ClosedError, ConvergeTimeoutError
from converge.runtime._state import RuntimeParts, logger

__all__ = ["ReceivePart"]


class ReceivePart(RuntimeParts):
    """Feed the inbox from the transport and wake the scheduler per message."""

    async def _receive_one(self) -> Message:
        if self.identity_registry is not None and hasattr(self.transport, "receive_verified"):
            msg: Message = await self.transport.receive_verified(
                self.identity_registry, timeout=self.receive_timeout_sec
            )
        else:
            msg = await self.transport.receive(timeout=self.receive_timeout_sec)
        return msg

    async def _receive_loop(self) -> None:
        while True:
            try:
                message = await self._receive_one()
            except TimeoutError:
                continue
            except ClosedError:
                logger.info("agent %s: transport closed; receive task ends", self.agent.id)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bad message must not end the receive task
                self.stats.receive_errors += 1
                self._metric("runtime_receive_errors_total")
                self.last_error = f"receive: {type(exc).__name__}: {exc}"
                logger.warning("agent %s: receive failed: %s", self.agent.id, exc)
                await asyncio.sleep(0.01)  # avoid a hot loop on a persistent failure
                continue
            if not isinstance(message, Message):
                self.stats.receive_errors += 1
                self._metric("runtime_receive_errors_total")
                logger.warning(
                    "agent %s: transport returned %r, not a Message", self.agent.id, message
                )
                continue
            self.stats.messages_received += 1
            self._metric("runtime_messages_received_total")
            self._record_replay(message)
            try:
                await self.inbox.push(message)
            except ConvergeTimeoutError as exc:
                logger.warning("agent %s: %s; message %s dropped", self.agent.id, exc, message.id)
            self.scheduler.notify()

    def _record_replay(self, message: Message) -> None:
        if self.replay_log is None:
            return
        try:
            self.replay_log.record_message(message, direction="inbound", agent_id=self.agent.id)
        except Exception as exc:  # replay recording never stops receiving
            logger.warning("agent %s: replay log failed: %s", self.agent.id, exc)
