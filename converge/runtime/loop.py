# Over 400 lines: the seed's 25-keyword constructor (API.md), its checks and typed views.
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
The receive task, the decide step, the checkpoints, the claim upkeep and the worker's
claims live in the private modules ``_receive``, ``_decide``, ``_checkpoint``,
``_claims`` and ``_work``: parts the runtime composes, sharing one ``RuntimeContext``.
Its collaborators are typed by the small Protocols of :mod:`converge.runtime.deps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping

from converge.coordination.task_manager import TaskManager
from converge.core.agent import Agent, AgentState, maybe_await
from converge.core.decisions import Decision
from converge.core.descriptor import AgentDescriptor
from converge.core.tools import ToolRegistry
from converge.errors import ConfigError, ConvergeError, NotStartedError
from converge.lifecycle import AsyncService
from converge.runtime._checkpoint import CheckpointPart
from converge.runtime._claims import ClaimsPart
from converge.runtime._decide import DecidePart
from converge.runtime._gc import freeze_startup_objects
from converge.runtime._receive import ReceivePart
from converge.runtime._state import RuntimeContext, RuntimeState, RuntimeStats
from converge.runtime._tracing import decide_span
from converge.runtime._work import WorkRunner
from converge.runtime.deps import (
    CheckpointStore,
    Discovery,
    MessageTransport,
    MetricsSink,
    PoolService,
    ReplayRecorder,
    RuntimeDeps,
    TaskService,
)
from converge.runtime.executor import Executor, StandardExecutor
from converge.runtime.inbox import DEFAULT_RUNTIME_INBOX_SIZE, Inbox
from converge.runtime.scheduler import Scheduler
from converge.runtime.worker import Worker
from events import EventLog, RecordedEvent, TaskClaimed

__all__ = ["AgentRuntime", "Inbox", "RuntimeState", "RuntimeStats"]

logger = logging.getLogger(__name__)


ExecutorFactory = Callable[..., Executor]
"""Called like :class:`StandardExecutor` (agent id, network, task and pool manager, kwargs)."""


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

    With a ``task_manager``: a :class:`~converge.runtime.worker.Worker` agent gets
    its tasks claimed and handled (see :mod:`converge.runtime.worker`); ``decide``
    receives the PENDING tasks the agent may take followed by the tasks it holds;
    every ``claim_sweep_interval_sec`` (with jitter; ``None``: never) the runtime
    releases expired claims, whoever held them. ``stop()`` stops claiming, lets
    running ``handle`` calls finish within ``drain_timeout_sec`` (then cancels them)
    and releases every claim the agent still holds (reason ``"shutdown"``), so no task
    stays assigned to a process that is gone.

    The collaborators may come as one :class:`~converge.runtime.deps.RuntimeDeps`
    (``deps=``) instead of the separate keyword arguments, not both.
    """

    def __init__(
        self,
        agent: Agent,
        transport: MessageTransport,
        *,
        pool_manager: PoolService | None = None,
        task_manager: TaskService | None = None,
        metrics_collector: MetricsSink | None = None,
        discovery_service: Discovery | None = None,
        agent_descriptor: AgentDescriptor | None = None,
        identity_registry: object | None = None,
        replay_log: ReplayRecorder | None = None,
        tool_registry: ToolRegistry | None = None,
        checkpoint_store: CheckpointStore | None = None,
        checkpoint_interval_sec: float = 60.0,
        inbox: Inbox | None = None,
        inbox_kwargs: Mapping[str, int | bool | None] | None = None,
        scheduler: Scheduler | None = None,
        executor_factory: ExecutorFactory | None = None,
        executor_kwargs: Mapping[str, object] | None = None,
        health_check: Callable[[], bool] | None = None,
        ready_check: Callable[[], bool] | None = None,
        receive_timeout_sec: float = 30.0,
        decision_log: EventLog | None = None,
        decide_timeout_sec: float = 30.0,
        tick_interval_sec: float = 1.0,
        batch_size: int | None = 100,
        stop_timeout_sec: float = 10.0,
        drain_timeout_sec: float = 10.0,
        claim_sweep_interval_sec: float | None = 5.0,
        rescan_interval_sec: float = 5.0,
        deps: RuntimeDeps | None = None,
    ) -> None:
        if not isinstance(agent, Agent):
            raise ConfigError(f"agent must be an Agent, got {type(agent).__name__}")
        for name, value in (
            ("checkpoint_interval_sec", checkpoint_interval_sec),
            ("receive_timeout_sec", receive_timeout_sec),
            ("decide_timeout_sec", decide_timeout_sec),
            ("tick_interval_sec", tick_interval_sec),
            ("stop_timeout_sec", stop_timeout_sec),
            ("drain_timeout_sec", drain_timeout_sec),
            (
                "claim_sweep_interval_sec",
                1.0 if claim_sweep_interval_sec is None else claim_sweep_interval_sec,
            ),
            ("rescan_interval_sec", rescan_interval_sec),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value > 0)
            ):
                raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}")
        if inbox is not None and inbox_kwargs:
            raise ConfigError("pass either inbox or inbox_kwargs, not both")
        separate = RuntimeDeps(
            task_manager=task_manager,
            pool_manager=pool_manager,
            metrics_collector=metrics_collector,
            discovery_service=discovery_service,
            identity_registry=identity_registry,
            replay_log=replay_log,
            tool_registry=tool_registry,
            checkpoint_store=checkpoint_store,
            decision_log=decision_log,
        )
        if deps is not None and separate != RuntimeDeps():
            raise ConfigError("pass the collaborators either in deps or one by one, not both")
        if inbox is None:
            settings: dict[str, int | bool | None] = {"maxsize": DEFAULT_RUNTIME_INBOX_SIZE}
            settings.update(inbox_kwargs or {})
            inbox = Inbox(
                maxsize=_optional_int(settings.get("maxsize")),
                drop_when_full=bool(settings.get("drop_when_full", False)),
            )
        self.agent = agent
        self.transport = transport
        self.agent_descriptor = agent_descriptor
        self.checkpoint_interval_sec = float(checkpoint_interval_sec)
        self.health_check = health_check
        self.ready_check = ready_check
        self.receive_timeout_sec = float(receive_timeout_sec)
        self.decide_timeout_sec = float(decide_timeout_sec)
        self.tick_interval_sec = float(tick_interval_sec)
        self.batch_size = batch_size
        self.stop_timeout_sec = float(stop_timeout_sec)
        self.drain_timeout_sec = float(drain_timeout_sec)
        self.claim_sweep_interval_sec = (
            None if claim_sweep_interval_sec is None else float(claim_sweep_interval_sec)
        )
        self.rescan_interval_sec = float(rescan_interval_sec)
        self.ctx = RuntimeContext(
            agent,
            transport,
            deps if deps is not None else separate,
            inbox=inbox,
            scheduler=scheduler if scheduler is not None else Scheduler(),
            receive_timeout_sec=self.receive_timeout_sec,
            decide_timeout_sec=self.decide_timeout_sec,
        )
        self._receiver = ReceivePart(self.ctx)
        self._decider = DecidePart(self.ctx)
        self._checkpoints = CheckpointPart(self.ctx, self.checkpoint_interval_sec)
        self._claims = ClaimsPart(self.ctx)
        self.work: WorkRunner | None = None
        self._executor_factory = executor_factory
        self._executor_kwargs = dict(executor_kwargs or {})
        self.executor: Executor | None = None
        self._state = RuntimeState.NEW
        self._tasks: list[asyncio.Task[None]] = []
        self._registered = False
        self._loop_started = asyncio.Event()
        self._claimed = asyncio.Event()  # the agent claimed a task: look at its leases
        # Only an agent whose decide or on_tick is its own sees tasks; for others (a
        # Worker, whose runtime part claims by itself) a tick skips listing them, and a
        # task event does not wake the loop.
        self._sees_tasks = (
            type(agent).decide is not Agent.decide or type(agent).on_tick is not Agent.on_tick
        )
        # the seed design's attributes, declared on Agent: the managers of its runtime
        agent.task_manager = self.deps.task_manager
        agent.pool_manager = self.deps.pool_manager

    # -- collaborators (read-only views of deps) -------------------------------

    @property
    def deps(self) -> RuntimeDeps:
        """The runtime's collaborators."""
        return self.ctx.deps

    @property
    def task_manager(self) -> TaskService | None:
        return self.ctx.deps.task_manager

    @property
    def pool_manager(self) -> PoolService | None:
        return self.ctx.deps.pool_manager

    @property
    def metrics_collector(self) -> MetricsSink | None:
        return self.ctx.deps.metrics_collector

    @property
    def discovery_service(self) -> Discovery | None:
        return self.ctx.deps.discovery_service

    @property
    def identity_registry(self) -> object | None:
        return self.ctx.deps.identity_registry

    @property
    def replay_log(self) -> ReplayRecorder | None:
        return self.ctx.deps.replay_log

    @property
    def tool_registry(self) -> ToolRegistry | None:
        return self.ctx.deps.tool_registry

    @property
    def checkpoint_store(self) -> CheckpointStore | None:
        return self.ctx.deps.checkpoint_store

    @property
    def decision_log(self) -> EventLog | None:
        return self.ctx.deps.decision_log

    @property
    def inbox(self) -> Inbox:
        return self.ctx.inbox

    @property
    def scheduler(self) -> Scheduler:
        return self.ctx.scheduler

    @property
    def stats(self) -> RuntimeStats:
        """Counters of this runtime (monotonic)."""
        return self.ctx.stats

    @property
    def last_error(self) -> str | None:
        """The last failure the loop logged and went on from, or None."""
        return self.ctx.last_error

    @property
    def checkpoint_key(self) -> str:
        """Key of this agent's checkpoint in ``checkpoint_store``."""
        return self._checkpoints.key

    def load_checkpoint(self) -> dict[str, object] | None:
        """Return the last checkpoint saved for this agent, or None."""
        return self._checkpoints.load()

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
        kwargs: dict[str, object] = {
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
        if not isinstance(executor, Executor):
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
            if self.task_manager is not None:
                await self.task_manager.start()
            if self.pool_manager is not None:
                await self.pool_manager.start()
            self._listen_for_tasks(True)
            await self._register()
            await maybe_await(self.agent.on_start())
            self._checkpoints.restore()
            freeze_startup_objects()  # once per process: short full collections from here on
            self._loop_started = asyncio.Event()
            self._tasks = [
                asyncio.create_task(
                    self._receiver.run(), name=f"converge-receive-{self.agent.id[:8]}"
                ),
                asyncio.create_task(self._run_loop(), name=f"converge-loop-{self.agent.id[:8]}"),
            ]
            if self.task_manager is not None and self.claim_sweep_interval_sec is not None:
                self._tasks.append(
                    asyncio.create_task(
                        self._claims.sweep(self.claim_sweep_interval_sec),
                        name=f"converge-sweep-{self.agent.id[:8]}",
                    )
                )
            if self.task_manager is not None and not isinstance(self.agent, Worker):
                self._tasks.append(
                    asyncio.create_task(
                        self._claims.keep_alive(self._claimed, self.tick_interval_sec * 5),
                        name=f"converge-heartbeat-{self.agent.id[:8]}",
                    )
                )
            if isinstance(self.agent, Worker) and isinstance(self.task_manager, TaskManager):
                self.work = WorkRunner(
                    self.agent,
                    self.task_manager,
                    pool_ids=self._claims.worker_pools,
                    metric=self.ctx.metric,
                    rescan_interval_sec=self.rescan_interval_sec,
                )
                await self.work.start()
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
        tm = self.task_manager
        if tm is None:
            return
        if on:
            tm.add_listener(self._on_task_event)
        else:
            tm.remove_listener(self._on_task_event)

    def _on_task_event(self, recorded: RecordedEvent) -> None:
        if self._sees_tasks:
            self.scheduler.notify()
        event = recorded.event
        if isinstance(event, TaskClaimed) and event.agent_id == self.agent.id:
            self._claimed.set()

    async def _teardown(self) -> None:
        work, self.work = self.work, None
        if work is not None:
            await work.stop(self.drain_timeout_sec)
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
            self._checkpoints.save(force=True)
        await self._claims.release_held(self.stop_timeout_sec)
        with contextlib.suppress(ConvergeError):
            await self._decider.call_hook(self.agent.on_stop, "on_stop")
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

    def _descriptor(self) -> AgentDescriptor:
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

    # -- loop ----------------------------------------------------------------------

    async def _run_loop(self) -> None:
        self._loop_started.set()
        first = True  # the first tick runs at once: an agent acts as soon as it is started
        while True:
            if not first:
                await self.scheduler.wait_for_work(self.tick_interval_sec)
            first = False
            if self._state not in (RuntimeState.RUNNING, RuntimeState.STARTING):
                return
            await self.tick()
            self._checkpoints.save()

    async def tick(self) -> list[Decision]:
        """Run one iteration (poll, decide, execute) and return the executed decisions.

        Never raises for a failing ``decide``, tick hook or decision; they are logged.
        """
        self.stats.ticks += 1
        self.ctx.metric("runtime_ticks_total")
        messages = self.inbox.poll(self.batch_size)
        self.ctx.metric("runtime_inbox_size", len(self.inbox), gauge=True)
        tasks = self._decider.tasks_for_decide() if self._sees_tasks else []
        await self._decider.call_hook(lambda: self.agent.on_tick(messages, tasks), "on_tick")
        with decide_span(self.task_manager, self.agent.id, tasks):
            decisions = await self._decider.decide(messages, tasks)
        if decisions and self.executor is not None:
            self.stats.decisions += len(decisions)
            try:
                await self.executor.execute(decisions)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a custom executor failing does not stop the loop
                self.ctx.last_error = f"execute: {type(exc).__name__}: {exc}"
                logger.error("agent %s: executor failed: %s", self.agent.id, exc)
        return decisions


def _optional_int(value: object) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ConfigError(f"inbox maxsize must be an int or None, got {value!r}")
