"""The agent runtime: inbox, receive task and the decide/execute loop of one agent.

::

    while running:
        await scheduler.wait_for_work(tick_interval_sec)
        messages = inbox.poll(batch_size)
        tasks = task_manager.list_pending_tasks_for_agent(agent.id, pools, capabilities)
        decisions = await agent.decide(messages, tasks)      # sync or async, bounded
        await executor.execute(decisions)

A receive task feeds the inbox from the transport (verified when an identity registry is
given) and wakes the scheduler. Nothing in here lets one bad message, decision or
``decide`` call stop the loop: each is logged and counted, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

import orjson

from converge.core.agent import Agent, AgentState, maybe_await
from converge.core.decisions import Decision, SendMessage
from converge.core.message import Message
from converge.core.task import Task
from converge.core.tools import ToolRegistry
from converge.errors import (
    ClosedError,
    ConfigError,
    ConvergeError,
    ConvergeTimeoutError,
    NotStartedError,
)
from converge.lifecycle import AsyncService
from converge.runtime.executor import Executor, StandardExecutor
from converge.runtime.inbox import Inbox
from converge.runtime.scheduler import Scheduler
from events import EventLog

__all__ = ["AgentRuntime", "Inbox", "RuntimeState", "RuntimeStats"]

logger = logging.getLogger(__name__)


class RuntimeState(StrEnum):
    """Lifecycle of a runtime."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class RuntimeStats:
    """Counters of one runtime (monotonic)."""

    def __init__(self) -> None:
        self.ticks = 0
        self.messages_received = 0
        self.receive_errors = 0
        self.decide_errors = 0
        self.decide_timeouts = 0
        self.junk_decisions = 0
        self.decisions = 0
        self.checkpoints = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain dict."""
        return dict(vars(self))


ExecutorFactory = Callable[..., Executor]


class AgentRuntime(AsyncService):
    """Run one agent: receive messages, decide, execute, checkpoint.

    ``start()`` starts the transport, registers ``agent_descriptor`` (or a descriptor
    built from the agent) with ``discovery_service``, calls ``agent.on_start`` and
    starts the receive and loop tasks; it returns once they run. ``stop()`` does the
    reverse and leaves no task running. ``transport`` is a transport or an
    ``AgentNetwork`` (anything with ``start``, ``stop``, ``send`` and ``receive``);
    with ``identity_registry`` the runtime receives through ``receive_verified``.
    ``decide_timeout_sec`` bounds each ``decide``
    call, ``tick_interval_sec`` how long the loop sleeps without work,
    ``receive_timeout_sec`` each wait of the receive task. ``executor_factory`` is
    called like :class:`StandardExecutor` with ``executor_kwargs`` added.
    """

    def __init__(
        self,
        agent: Agent,
        transport: Any,
        *,
        pool_manager: Any = None,
        task_manager: Any = None,
        metrics_collector: Any = None,
        discovery_service: Any = None,
        agent_descriptor: Any = None,
        identity_registry: Any = None,
        replay_log: Any = None,
        tool_registry: ToolRegistry | None = None,
        checkpoint_store: Any = None,
        checkpoint_interval_sec: float = 60.0,
        inbox: Inbox | None = None,
        inbox_kwargs: Mapping[str, Any] | None = None,
        scheduler: Scheduler | None = None,
        executor_factory: ExecutorFactory | None = None,
        executor_kwargs: Mapping[str, Any] | None = None,
        health_check: Callable[[], bool] | None = None,
        ready_check: Callable[[], bool] | None = None,
        receive_timeout_sec: float = 30.0,
        decision_log: EventLog | None = None,
        decide_timeout_sec: float = 30.0,
        tick_interval_sec: float = 1.0,
        batch_size: int | None = 100,
        stop_timeout_sec: float = 10.0,
    ) -> None:
        if not isinstance(agent, Agent):
            raise ConfigError(f"agent must be an Agent, got {type(agent).__name__}")
        for name, value in (
            ("checkpoint_interval_sec", checkpoint_interval_sec),
            ("receive_timeout_sec", receive_timeout_sec),
            ("decide_timeout_sec", decide_timeout_sec),
            ("tick_interval_sec", tick_interval_sec),
            ("stop_timeout_sec", stop_timeout_sec),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value > 0)
            ):
                raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}")
        if inbox is not None and inbox_kwargs:
            raise ConfigError("pass either inbox or inbox_kwargs, not both")
        self.agent = agent
        self.transport = transport
        self.pool_manager = pool_manager
        self.task_manager = task_manager
        self.metrics_collector = metrics_collector
        self.discovery_service = discovery_service
        self.agent_descriptor = agent_descriptor
        self.identity_registry = identity_registry
        self.replay_log = replay_log
        self.tool_registry = tool_registry
        self.checkpoint_store = checkpoint_store
        self.checkpoint_interval_sec = float(checkpoint_interval_sec)
        self.inbox = inbox if inbox is not None else Inbox(**dict(inbox_kwargs or {}))
        self.scheduler = scheduler if scheduler is not None else Scheduler()
        self.health_check = health_check
        self.ready_check = ready_check
        self.receive_timeout_sec = float(receive_timeout_sec)
        self.decision_log = decision_log
        self.decide_timeout_sec = float(decide_timeout_sec)
        self.tick_interval_sec = float(tick_interval_sec)
        self.batch_size = batch_size
        self.stop_timeout_sec = float(stop_timeout_sec)
        self.stats = RuntimeStats()
        self.last_error: str | None = None
        self._executor_factory = executor_factory
        self._executor_kwargs = dict(executor_kwargs or {})
        self.executor: Executor | None = None
        self._state = RuntimeState.NEW
        self._tasks: list[asyncio.Task[None]] = []
        self._registered = False
        self._last_checkpoint = 0.0
        self._loop_started = asyncio.Event()
        agent.task_manager = task_manager
        agent.pool_manager = pool_manager

    # -- lifecycle -------------------------------------------------------------

    @property
    def state(self) -> RuntimeState:
        """The lifecycle state."""
        return self._state

    @property
    def running(self) -> bool:
        """Whether the runtime is started and not stopped (the seed design's flag)."""
        return self._state is RuntimeState.RUNNING

    @property
    def agent_id(self) -> str:
        """The agent's id."""
        return self.agent.id

    def _build_executor(self) -> Executor:
        kwargs: dict[str, Any] = {
            "metrics_collector": self.metrics_collector,
            "replay_log": self.replay_log,
            "tool_registry": self.tool_registry,
            "decision_log": self.decision_log,
        }
        kwargs.update(self._executor_kwargs)
        factory: ExecutorFactory = self._executor_factory or StandardExecutor
        executor = factory(
            self.agent.id, self.transport, self.task_manager, self.pool_manager, **kwargs
        )
        if not callable(getattr(executor, "execute", None)):
            raise ConfigError(f"executor_factory returned {executor!r}, which has no execute()")
        return executor

    async def start(self) -> None:
        """Start the transport, register with discovery and run the loop; idempotent."""
        if self._state in (RuntimeState.RUNNING, RuntimeState.STARTING):
            return
        if self._state is RuntimeState.STOPPING:
            raise NotStartedError(f"runtime of {self.agent.id} is stopping; await stop() first")
        self._state = RuntimeState.STARTING
        try:
            self.executor = self._build_executor()
            await self.transport.start()
            for manager in (self.task_manager, self.pool_manager):
                if manager is not None and callable(getattr(manager, "start", None)):
                    await manager.start()
            self._listen_for_tasks(True)
            await self._register()
            await maybe_await(self.agent.on_start())
            self._restore_checkpoint()
            self._loop_started = asyncio.Event()
            self._tasks = [
                asyncio.create_task(
                    self._receive_loop(), name=f"converge-receive-{self.agent.id[:8]}"
                ),
                asyncio.create_task(self._run_loop(), name=f"converge-loop-{self.agent.id[:8]}"),
            ]
            async with asyncio.timeout(self.stop_timeout_sec):
                await self._loop_started.wait()
        except BaseException:
            self._state = RuntimeState.STOPPING
            await self._teardown()
            raise
        self._state = RuntimeState.RUNNING
        self.agent.state = AgentState.IDLE
        logger.info("runtime of agent %s started", self.agent.id, extra={"agent_id": self.agent.id})

    async def stop(self) -> None:
        """Stop the loop and receive tasks, unregister, stop the transport; idempotent.

        A tick in progress finishes first (cancelled after ``stop_timeout_sec``), so a
        decision it executed is also recorded.
        """
        if self._state in (RuntimeState.NEW, RuntimeState.STOPPED, RuntimeState.STOPPING):
            return
        self._state = RuntimeState.STOPPING
        try:
            await self._teardown()
        finally:
            self._state = RuntimeState.STOPPED
            self.agent.state = AgentState.OFFLINE
        logger.info("runtime of agent %s stopped", self.agent.id, extra={"agent_id": self.agent.id})

    def _listen_for_tasks(self, on: bool) -> None:
        """Wake the loop when the task projection changes instead of at the next tick."""
        method = "add_listener" if on else "remove_listener"
        hook = getattr(self.task_manager, method, None)
        if callable(hook):
            hook(self._on_task_event)

    def _on_task_event(self, recorded: object) -> None:
        self.scheduler.notify()

    async def _teardown(self) -> None:
        self._listen_for_tasks(False)
        self.scheduler.notify()
        tasks, self._tasks = self._tasks, []
        # The loop task returns by itself once its current tick is done (the state is no
        # longer running): cancelling it mid-tick could lose the record of a decision
        # already executed. It is cancelled only when it overruns stop_timeout_sec.
        current = asyncio.current_task()
        looping = [
            t for t in tasks if t.get_name().startswith("converge-loop-") and t is not current
        ]
        if looping:
            await asyncio.wait(looping, timeout=self.stop_timeout_sec)
        for task in tasks:
            task.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=self.stop_timeout_sec)
            for task in pending:
                logger.error(
                    "runtime task %s did not stop in %ss", task.get_name(), self.stop_timeout_sec
                )
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    logger.error("runtime task %s failed: %r", task.get_name(), task.exception())
        if self._state is not RuntimeState.STARTING:
            self._checkpoint(force=True)
        with contextlib.suppress(ConvergeError):
            await self._call_hook(self.agent.on_stop, "on_stop")
        await self._unregister()
        try:
            await self.transport.stop()
        except (ConvergeError, OSError) as exc:
            logger.warning("agent %s: transport stop failed: %s", self.agent.id, exc)

    def is_healthy(self) -> bool:
        """Whether the loop runs (and ``health_check``, when given, says healthy)."""
        if self._state is not RuntimeState.RUNNING:
            return False
        if any(task.done() for task in self._tasks):
            return False
        return self._check(self.health_check, "health_check")

    def is_ready(self) -> bool:
        """Whether the runtime is healthy, its transport runs and ``ready_check`` agrees."""
        if not self.is_healthy():
            return False
        transport_running = getattr(self.transport, "is_running", True)
        if transport_running is False:
            return False
        return self._check(self.ready_check, "ready_check")

    @staticmethod
    def _check(check: Callable[[], bool] | None, name: str) -> bool:
        if check is None:
            return True
        try:
            return bool(check())
        except Exception as exc:  # a failing probe means "no", never a crash
            logger.warning("%s raised %r", name, exc)
            return False

    # -- discovery -----------------------------------------------------------------

    def _descriptor(self) -> Any:
        if self.agent_descriptor is not None:
            return self.agent_descriptor
        from converge.network.network import build_descriptor

        return build_descriptor(self.agent)

    async def _register(self) -> None:
        if self.discovery_service is None:
            return
        await self.discovery_service.register(self._descriptor())
        self._registered = True

    async def _unregister(self) -> None:
        if self.discovery_service is None or not self._registered:
            return
        self._registered = False
        try:
            await self.discovery_service.unregister(self.agent.id)
        except (ConvergeError, OSError) as exc:
            logger.warning("agent %s: unregister failed: %s", self.agent.id, exc)

    # -- receive -------------------------------------------------------------------

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

    def _metric(self, name: str, value: float = 1, *, gauge: bool = False) -> None:
        collector = self.metrics_collector
        if collector is None:
            return
        try:
            if gauge:
                collector.gauge(name, value, agent_id=self.agent.id)
            else:
                collector.inc(name, value, agent_id=self.agent.id)
        except Exception as exc:  # metrics never break the loop
            logger.warning("agent %s: metrics collector failed: %s", self.agent.id, exc)

    # -- loop ----------------------------------------------------------------------

    async def _run_loop(self) -> None:
        self._loop_started.set()
        while True:
            await self.scheduler.wait_for_work(self.tick_interval_sec)
            if self._state not in (RuntimeState.RUNNING, RuntimeState.STARTING):
                return
            await self.tick()
            self._checkpoint()

    async def tick(self) -> list[Decision]:
        """Run one iteration (poll, decide, execute) and return the executed decisions.

        Never raises for a failing ``decide``, tick hook or decision; they are logged.
        """
        self.stats.ticks += 1
        self._metric("runtime_ticks_total")
        messages = self.inbox.poll(self.batch_size)
        self._metric("runtime_inbox_size", len(self.inbox), gauge=True)
        tasks = self._pending_tasks()
        await self._call_hook(lambda: self.agent.on_tick(messages, tasks), "on_tick")
        decisions = await self._decide(messages, tasks)
        if decisions and self.executor is not None:
            self.stats.decisions += len(decisions)
            try:
                await self.executor.execute(decisions)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a custom executor failing does not stop the loop
                self.last_error = f"execute: {type(exc).__name__}: {exc}"
                logger.error("agent %s: executor failed: %s", self.agent.id, exc)
        return decisions

    def _pending_tasks(self) -> list[Task]:
        tm = self.task_manager
        if tm is None:
            return []
        try:
            pool_ids = None
            if self.pool_manager is not None:
                pool_ids = self.pool_manager.get_pools_for_agent(self.agent.id)
            tasks = tm.list_pending_tasks_for_agent(
                self.agent.id, pool_ids=pool_ids, capabilities=self.agent.capabilities
            )
            return list(tasks)
        except Exception as exc:  # a projection read failing skips this tick's tasks
            self.last_error = f"tasks: {type(exc).__name__}: {exc}"
            logger.warning("agent %s: listing pending tasks failed: %s", self.agent.id, exc)
            return []

    async def _call_hook(self, hook: Callable[[], Any], name: str) -> None:
        try:
            async with asyncio.timeout(self.decide_timeout_sec):
                await maybe_await(hook())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # hooks are user code: log and go on
            logger.warning("agent %s: %s failed: %r", self.agent.id, name, exc)

    async def _decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        try:
            async with asyncio.timeout(self.decide_timeout_sec):
                raw = await maybe_await(self.agent.decide(messages, tasks))
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is None or current.cancelling():
                raise
            self.stats.decide_errors += 1  # decide itself raised CancelledError
            self._metric("runtime_decide_errors_total")
            logger.warning("agent %s: decide raised CancelledError", self.agent.id)
            return []
        except TimeoutError:
            self.stats.decide_timeouts += 1
            self._metric("runtime_decide_timeouts_total")
            self.last_error = f"decide timed out after {self.decide_timeout_sec}s"
            logger.warning(
                "agent %s: decide did not return within %ss; skipping this tick",
                self.agent.id,
                self.decide_timeout_sec,
            )
            return []
        except Exception as exc:  # decide is user code: log and go on
            self.stats.decide_errors += 1
            self._metric("runtime_decide_errors_total")
            self.last_error = f"decide: {type(exc).__name__}: {exc}"
            logger.warning("agent %s: decide raised %r", self.agent.id, exc, exc_info=True)
            return []
        return self._coerce_decisions(raw)

    def _coerce_decisions(self, raw: object) -> list[Decision]:
        if raw is None:
            return []
        if isinstance(raw, Decision | Message):
            raw = [raw]
        if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Iterable):
            self.stats.junk_decisions += 1
            self._metric("runtime_junk_decisions_total")
            logger.warning(
                "agent %s: decide returned %s, not a list of decisions; ignored",
                self.agent.id,
                type(raw).__name__,
            )
            return []
        out: list[Decision] = []
        try:
            items = list(raw)
        except Exception as exc:  # a generator from decide may fail while iterated
            self.stats.decide_errors += 1
            self._metric("runtime_decide_errors_total")
            logger.warning("agent %s: iterating decide's result failed: %r", self.agent.id, exc)
            return []
        for item in items:
            if isinstance(item, Message):
                item = SendMessage(self._signed(item))
            elif isinstance(item, SendMessage) and item.message.signature is None:
                item = SendMessage(self._signed(item.message))
            if isinstance(item, Decision):
                out.append(item)
            else:
                self.stats.junk_decisions += 1
                self._metric("runtime_junk_decisions_total")
                logger.warning(
                    "agent %s: decide returned %r, not a Decision; ignored", self.agent.id, item
                )
        return out

    def _signed(self, message: Message) -> Message:
        if message.signature is not None or message.sender != self.agent.id:
            return message
        try:
            return self.agent.sign_message(message)
        except ConvergeError as exc:
            logger.warning("agent %s: cannot sign message %s: %s", self.agent.id, message.id, exc)
            return message

    # -- checkpoints ---------------------------------------------------------------

    @property
    def checkpoint_key(self) -> str:
        """Key of this agent's checkpoint in ``checkpoint_store``."""
        return f"runtime/{self.agent.id}/checkpoint"

    def _checkpoint(self, *, force: bool = False) -> None:
        store = self.checkpoint_store
        if store is None:
            return
        now = time.time()
        if not force and now - self._last_checkpoint < self.checkpoint_interval_sec:
            return
        self._last_checkpoint = now
        data = {
            "agent_id": self.agent.id,
            "state": self.agent.state.value,
            "saved_at": now,
            "stats": self.stats.as_dict(),
            "inbox_size": len(self.inbox),
        }
        try:
            store.put(self.checkpoint_key, orjson.dumps(data))
            self.stats.checkpoints += 1
        except (ConvergeError, OSError) as exc:
            logger.warning("agent %s: checkpoint failed: %s", self.agent.id, exc)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """Return the last checkpoint saved for this agent, or None."""
        if self.checkpoint_store is None:
            return None
        raw = self.checkpoint_store.get(self.checkpoint_key)
        if raw is None:
            return None
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            logger.warning("agent %s: checkpoint is not JSON; ignored", self.agent.id)
            return None
        return value if isinstance(value, dict) else None

    def _restore_checkpoint(self) -> None:
        data = self.load_checkpoint()
        if data is not None:
            logger.info(
                "agent %s: resuming after checkpoint saved at %s",
                self.agent.id,
                data.get("saved_at"),
            )
        self._last_checkpoint = time.time()
