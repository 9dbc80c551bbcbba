# Over 400 lines: one aggregate's commands (submit to sweep, heartbeats, retries, wait).
"""TaskManager: submit, claim, report, fail and cancel tasks as events on stream ``tasks``.

Every change is an event on the task's subject ``tasks.<task_id>``, appended with the
subject's last sequence as ``expected_version``: when two agents (in one process or
many) race to claim a task, the log accepts exactly one claim and the loser's
:meth:`TaskManager.claim` returns ``False``. Queries read a
:class:`~projections.TaskProjection` that follows the stream; commands apply their own
acknowledgement at once, so a process reads its writes; :meth:`TaskManager.sync`
brings in what other processes wrote.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from converge.compat import resolve_event_log
from converge.coordination._views import CallableMapping
from converge.core._codec import check_str, check_value
from converge.core.store import AsyncStore, Store
from converge.core.task import Task, TaskState
from converge.core.topic import Topic
from converge.errors import (
    ConcurrencyError,
    ConfigError,
    ConvergeError,
    ConvergeTimeoutError,
    DecodeError,
    InvalidStateError,
    NotAuthorizedError,
    NotFoundError,
)
from converge.service import Plan, ProjectedService
from events import (
    Event,
    EventLog,
    RecordedEvent,
    TaskCancelled,
    TaskClaimed,
    TaskClaimExtended,
    TaskClaimReleased,
    TaskFailed,
    TaskReported,
    TaskRetryScheduled,
    TaskSubmitted,
    subject,
)
from events.subjects import encode_token
from projections import TASKS_STREAM, TaskProjection
from projections.verify import SignatureVerifier

__all__ = ["TaskManager"]

logger = logging.getLogger(__name__)

_SWEEP_CONCURRENCY = 64
_WAIT_RECHECK_SEC = 1.0  # wait() also re-reads the projection this often (gap reads)

DEFAULT_CLAIM_TTL_SEC = 30.0
"""TTL of a claim on a task that sets no ``claim_ttl_sec`` of its own."""


def _check_id(value: object, what: str) -> str:
    return check_str(value, what, allow_empty=False)


def _task_subject(task_id: str) -> str:
    return f"{TASKS_STREAM}.{encode_token(task_id)}"  # subject(TASKS_STREAM, task_id), inlined


def _capability_names(capabilities: Iterable[object]) -> set[str]:
    names: set[str] = set()
    for item in capabilities:
        if isinstance(item, str):
            names.add(item)
            continue
        name = getattr(item, "name", None)
        if not isinstance(name, str):
            raise DecodeError(f"capabilities must be names or Capability objects, got {item!r}")
        names.add(name)
    return names


class TaskManager(ProjectedService[TaskProjection]):
    """Task lifecycle on an event log; the state is a projection of stream ``tasks``.

    ``event_log=None`` uses a private in-process ``MemoryEventLog``. ``snapshot_store``
    keeps projection snapshots so a restart resumes (every ``snapshot_every`` events and
    on ``stop()``). The seed design's ``store`` (``TaskManager(store)`` or ``store=``,
    see :func:`converge.compat.resolve_event_log`) keeps the events in that store (a
    :class:`~events.StoreEventLog`): managers on it, in any process, share the tasks,
    and a restart finds them again; plain queries then read what the store holds
    without ``start()``.
    Commands start a manager that was not started. Task objects returned by queries
    belong to the projection: read them, do not mutate them.

    Every claim has a TTL: the task's ``claim_ttl_sec``, else ``default_claim_ttl_sec``
    (``None``: claims without one never expire). It is recorded in the claim event, so
    every process agrees when the claim expires; the assignee keeps it alive with
    :meth:`extend_claim`, and :meth:`release_expired_claims` puts expired ones back.
    """

    def __init__(
        self,
        event_log: EventLog | None = None,
        *,
        snapshot_store: Store | AsyncStore | None = None,
        store: Store | AsyncStore | None = None,
        snapshot_every: int = 10_000,
        sync_timeout_sec: float = 10.0,
        verifier: SignatureVerifier | None = None,
        default_claim_ttl_sec: float | None = DEFAULT_CLAIM_TTL_SEC,
    ) -> None:
        if default_claim_ttl_sec is not None and (
            isinstance(default_claim_ttl_sec, bool)
            or not isinstance(default_claim_ttl_sec, int | float)
            or not (math.isfinite(default_claim_ttl_sec) and default_claim_ttl_sec > 0)
        ):
            raise ConfigError(
                f"default_claim_ttl_sec must be seconds > 0 or None, got {default_claim_ttl_sec!r}"
            )
        self.default_claim_ttl_sec = (
            None if default_claim_ttl_sec is None else float(default_claim_ttl_sec)
        )
        self._waiters: dict[str, set[asyncio.Event]] = {}
        super().__init__(
            TaskProjection(),
            resolve_event_log(event_log, store, "TaskManager"),
            snapshot_store=snapshot_store,
            snapshot_every=snapshot_every,
            sync_timeout_sec=sync_timeout_sec,
            verifier=verifier,
        )
        self.add_listener(self._wake_waiters)

    # -- queries -------------------------------------------------------------------------

    def get_task(self, task_id: str) -> Task | None:
        """Return the task, or ``None`` when the projection does not know it."""
        self._refresh()
        return self.projection.tasks.get(task_id)

    @property
    def tasks(self) -> CallableMapping[Task]:
        """Every known task by id; call it (``tasks()``) for a list in submission order."""
        self._refresh()
        return CallableMapping(lambda: self.projection.tasks)

    @property
    def pending_task_ids(self) -> set[str]:
        """The ids of the PENDING tasks (a snapshot)."""
        self._refresh()
        return {task.id for task in self.projection.pending()}

    def list_tasks_held_by(self, agent_id: str) -> list[Task]:
        """Return the ASSIGNED tasks ``agent_id`` holds, in the order it claimed them.

        Reads an index of the projection: the cost does not grow with finished tasks.
        """
        self._refresh()
        return self.projection.held_by(agent_id)

    def claim_lease(self, task_id: str) -> tuple[float, float] | None:
        """Return ``(expires_at, ttl)`` of the claim on ``task_id`` (Unix seconds, seconds).

        ``None`` when the task is not assigned or its claim has no TTL.
        """
        projection = self.projection
        expires = projection.lease_expires_at(task_id)
        ttl = projection.claim_ttl(task_id)
        return None if expires is None or ttl is None else (expires, ttl)

    def list_pending_tasks(self, *, refresh_from_store: bool = False) -> list[Task]:
        """Return the PENDING tasks, oldest first.

        ``refresh_from_store`` (the seed's flag): with a store-backed log on a
        synchronous store, read what other processes stored first.
        """
        self._refresh(refresh_from_store)
        return self.projection.pending()

    def list_pending_tasks_for_agent(
        self,
        agent_id: str,
        pool_ids: Iterable[str] | None = None,
        capabilities: Iterable[object] | None = None,
        *,
        topics: Iterable[Topic] | None = None,
        refresh_from_store: bool = False,
    ) -> list[Task]:
        """Return the PENDING tasks ``agent_id`` may take, oldest first.

        With ``pool_ids``, a task bound to a pool is visible only when its pool is one
        of them; with ``capabilities`` (names or ``Capability`` objects), a task is
        visible only when every required capability is among them; with ``topics``, a
        task with a topic is visible only when one of them equals or matches it. A
        filter given as ``None`` is not applied. ``refresh_from_store`` as in
        :meth:`list_pending_tasks`.
        """
        self._refresh(refresh_from_store)
        pools = None if pool_ids is None else set(pool_ids)
        caps = None if capabilities is None else _capability_names(capabilities)
        wanted = None if topics is None else [Topic.coerce(t) for t in topics]
        result: list[Task] = []
        for task in self.projection.pending():
            if pools is not None and task.pool_id is not None and task.pool_id not in pools:
                continue
            if (
                caps is not None
                and task.required_capabilities
                and not caps.issuperset(task.required_capabilities)
            ):
                continue
            if (
                wanted is not None
                and task.topic is not None
                and not any(t == task.topic or t.matches(task.topic) for t in wanted)
            ):
                continue
            result.append(task)
        return result

    # -- commands ------------------------------------------------------------------------

    async def submit(self, task: Task, *, actor: str | None = None) -> str:
        """Record ``task`` (a ``task.submitted`` event) and return its id.

        ``actor``: the id of the agent submitting it for itself (its key signs the
        event); without one the submission acts for no agent, so a namespace that
        requires signatures accepts it only from a trusted identity. Raises
        ``InvalidStateError`` when a task with this id exists already and
        ``DecodeError`` for something that is not a ``Task``.
        """
        if not isinstance(task, Task):
            raise DecodeError(f"submit() takes a Task, got {type(task).__name__}")
        await self._ensure_started()
        projection = self.projection
        if task.id in projection.tasks:
            raise InvalidStateError(f"task {task.id!r} was already submitted")
        if actor is not None:
            actor = _check_id(actor, "actor")
        event = TaskSubmitted(task=task.to_dict(), actor=actor)
        try:
            await self._append(event, subject(TASKS_STREAM, task.id), 0)
        except ConcurrencyError as exc:
            raise InvalidStateError(
                f"task {task.id!r} was already submitted (by another writer)"
            ) from exc
        return task.id

    async def claim(self, agent_id: str, task_id: str) -> bool:
        """Assign a PENDING task to ``agent_id``; return whether this call won it.

        ``False`` for an unknown task, a task that is not PENDING, and a lost race
        against another claimer (the log accepted exactly one claim).
        """
        agent_id = _check_id(agent_id, "agent_id")
        task_id = _check_id(task_id, "task_id")

        def decide(task: Task | None) -> Plan[bool]:
            if task is None or task.state is not TaskState.PENDING:
                return (), False
            event = TaskClaimed(
                task_id=task_id,
                agent_id=agent_id,
                claimed_at=time.time(),
                claim_ttl_sec=self._claim_ttl(task),
                actor=agent_id,
            )
            return (event,), True

        async def look_up() -> Plan[bool]:
            return decide(await self._find(task_id))

        def plan() -> Plan[bool] | Awaitable[Plan[bool]]:
            task = self.projection.tasks.get(task_id)  # known (the usual case): no coroutine
            return look_up() if task is None else decide(task)

        try:
            return await self._execute(
                _task_subject(task_id), plan, what=f"claim of task {task_id!r}"
            )
        except ConcurrencyError:
            logger.debug("claim of %s by %s kept losing races", task_id, agent_id)
            return False

    async def report(self, agent_id: str, task_id: str, result: Any) -> None:
        """Complete a task assigned to ``agent_id`` with ``result`` (JSON-able).

        Raises ``NotFoundError`` for an unknown task, ``NotAuthorizedError`` when the
        task is not assigned to ``agent_id``, ``InvalidStateError`` when it is finished.
        """
        agent_id = _check_id(agent_id, "agent_id")
        task_id = _check_id(task_id, "task_id")

        def make() -> Event:
            return TaskReported(task_id=task_id, agent_id=agent_id, result=result, actor=agent_id)

        await self._assignee_command(agent_id, task_id, "report", make)

    async def fail_task(self, task_id: str, reason: object, *, agent_id: str | None = None) -> None:
        """Mark a task FAILED with ``reason`` (kept as the task's result).

        ``reason`` is usually a string; plain data (``{"error": ...}``) is kept as the
        result as given, and recorded both as text and as the event's ``details``.
        Raises ``DecodeError`` when it is neither.

        With ``agent_id``, only the assignee may fail it (else ``NotAuthorizedError``);
        without, anyone may (a system-level failure). Raises ``NotFoundError`` for an
        unknown task and ``InvalidStateError`` when it is finished already.
        """
        task_id = _check_id(task_id, "task_id")
        if agent_id is not None:
            agent_id = _check_id(agent_id, "agent_id")
        text = reason if isinstance(reason, str) else str(reason)
        details = None if isinstance(reason, str) else check_value(reason, "fail_task reason")

        def make() -> Event:
            return TaskFailed(
                task_id=task_id, reason=text, agent_id=agent_id, actor=agent_id, details=details
            )

        await self._assignee_command(agent_id, task_id, "fail", make)

    async def cancel_task(self, task_id: str, *, reason: str | None = None) -> bool:
        """Cancel a task that is not finished; return ``False`` when unknown or finished."""
        task_id = _check_id(task_id, "task_id")

        async def plan() -> Plan[bool]:
            task = await self._find(task_id)
            if task is None or task.state.is_terminal:
                return (), False
            return (TaskCancelled(task_id=task_id, reason=reason),), True

        try:
            return await self._execute(
                subject(TASKS_STREAM, task_id), plan, what=f"cancel of task {task_id!r}"
            )
        except ConcurrencyError:
            return False

    async def release_expired_claims(self, now: float | None = None) -> list[str]:
        """Put ASSIGNED tasks whose claim outlived ``claim_ttl_sec`` back to PENDING.

        ``now`` is wall-clock Unix seconds (default: now), so sweepers in several
        processes agree; when they race, each task is released once, by one of them.
        Returns the ids this call released.
        """
        now = time.time() if now is None else float(now)
        await self._ensure_started()
        expired = [
            (task.id, task.assigned_to)
            for task in self.projection.expired_claims(now)
            if task.assigned_to is not None
        ]
        if not expired:
            return []
        gate = asyncio.Semaphore(_SWEEP_CONCURRENCY)
        projection = self.projection

        async def release(task_id: str, agent_id: str) -> str | None:
            def plan() -> Plan[str | None]:
                task = projection.tasks.get(task_id)
                if (
                    task is None
                    or task.assigned_to != agent_id
                    or not projection.is_claim_expired(task_id, now)
                ):
                    return (), None  # another writer changed it meanwhile
                event = TaskClaimReleased(task_id=task_id, agent_id=agent_id, reason="expired")
                return (event,), task_id

            async with gate:
                try:
                    return await self._execute(
                        subject(TASKS_STREAM, task_id), plan, what=f"release of {task_id!r}"
                    )
                except ConcurrencyError:
                    return None

        outcomes = await asyncio.gather(
            *(release(task_id, agent_id) for task_id, agent_id in expired)
        )
        released = [task_id for task_id in outcomes if task_id is not None]
        if released:
            logger.info("released %d expired claims", len(released))
        return released

    async def extend_claim(self, agent_id: str, task_id: str) -> bool:
        """Restart the lease of ``agent_id``'s claim on ``task_id`` (a heartbeat event).

        Returns ``False`` when the task is not (or no longer) assigned to ``agent_id``:
        the claim expired and was released, or the task finished. Raises
        ``NotFoundError`` for an unknown task.
        """
        agent_id = _check_id(agent_id, "agent_id")
        task_id = _check_id(task_id, "task_id")

        def make() -> Event:
            return TaskClaimExtended(
                task_id=task_id, agent_id=agent_id, extended_at=time.time(), actor=agent_id
            )

        try:
            await self._assignee_command(agent_id, task_id, "extend the claim on", make)
        except (NotAuthorizedError, InvalidStateError):
            return False
        return True

    async def release_claim(self, agent_id: str, task_id: str, *, reason: str = "released") -> bool:
        """Give up ``agent_id``'s claim: the task is PENDING again, claimable by anyone.

        ``reason`` is recorded (the runtime says ``"shutdown"``). Returns ``False`` when
        the task is not assigned to ``agent_id``; raises ``NotFoundError`` when unknown.
        """
        agent_id = _check_id(agent_id, "agent_id")
        task_id = _check_id(task_id, "task_id")
        reason = check_str(reason, "reason", allow_empty=False)

        def make() -> Event:
            return TaskClaimReleased(
                task_id=task_id, agent_id=agent_id, reason=reason, actor=agent_id
            )

        try:
            await self._assignee_command(agent_id, task_id, "release", make)
        except (NotAuthorizedError, InvalidStateError):
            return False
        return True

    async def fail_attempt(self, agent_id: str, task_id: str, reason: object) -> bool:
        """Record a failed attempt by the assignee; retry the task while it may.

        While fewer than ``max_retries`` attempts failed before this one, the task goes
        back to PENDING (a ``task.retry_scheduled`` event with the attempt number) and
        this returns ``True``; otherwise it FAILS (``task.failed``, ``reason`` as result)
        and this returns ``False``. ``reason`` is a string or plain data. Raises as
        :meth:`fail_task` with ``agent_id`` does.
        """
        agent_id = _check_id(agent_id, "agent_id")
        task_id = _check_id(task_id, "task_id")
        text = reason if isinstance(reason, str) else str(reason)
        details = None if isinstance(reason, str) else check_value(reason, "fail_attempt reason")
        projection = self.projection
        retried = False

        def make() -> Event:
            nonlocal retried
            task = projection.tasks[task_id]
            attempt = projection.attempts(task_id) + 1
            retried = attempt <= (task.max_retries or 0)
            if retried:
                return TaskRetryScheduled(
                    task_id=task_id,
                    agent_id=agent_id,
                    attempt=attempt,
                    reason=text,
                    details=details,
                    actor=agent_id,
                )
            return TaskFailed(
                task_id=task_id, reason=text, agent_id=agent_id, actor=agent_id, details=details
            )

        await self._assignee_command(agent_id, task_id, "fail", make)
        return retried

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:  # noqa: ASYNC109
        """Return the task once it is COMPLETED, FAILED or CANCELLED.

        Woken by the projection's events (also those of other processes), never by
        polling the broker. ``timeout`` in seconds; ``None`` waits as long as it takes.
        Raises ``NotFoundError`` when no task has this id (after a sync) and
        ``ConvergeTimeoutError`` (a ``TimeoutError``) at the timeout.
        """
        task_id = _check_id(task_id, "task_id")
        await self._ensure_started()
        task = await self._find(task_id)
        if task is None:
            raise NotFoundError(f"unknown task {task_id!r}: submit it before waiting for it")
        if task.state.is_terminal:
            return task
        woken = asyncio.Event()
        waiters = self._waiters.setdefault(task_id, set())
        waiters.add(woken)
        projection = self.projection
        try:
            async with asyncio.timeout(timeout):
                while True:
                    # the listener wakes us; the bounded wait also covers events that
                    # reached the projection through a gap read, which calls no listener
                    with_recheck = asyncio.timeout(_WAIT_RECHECK_SEC)
                    try:
                        async with with_recheck:
                            await woken.wait()
                    except TimeoutError:
                        if not with_recheck.expired():
                            raise
                    woken.clear()
                    task = projection.tasks.get(task_id)
                    if task is not None and task.state.is_terminal:
                        return task
        except TimeoutError as exc:
            raise ConvergeTimeoutError(
                f"task {task_id!r} did not finish within {timeout}s; it is "
                f"{projection.tasks[task_id].state.value}"
            ) from exc
        finally:
            waiters.discard(woken)
            if not waiters:
                self._waiters.pop(task_id, None)

    # -- internals -----------------------------------------------------------------------

    def _claim_ttl(self, task: Task) -> float | None:
        ttl = task.claim_ttl_sec
        return self.default_claim_ttl_sec if ttl is None else ttl

    def _wake_waiters(self, recorded: RecordedEvent) -> None:
        if not self._waiters:
            return
        task_id = getattr(recorded.event, "task_id", None)
        for woken in self._waiters.get(task_id, ()) if isinstance(task_id, str) else ():
            woken.set()

    async def _find(self, task_id: str) -> Task | None:
        """Return the task, syncing once with the log when the projection lacks it."""
        task = self.projection.tasks.get(task_id)
        if task is None:
            await self.sync()
            task = self.projection.tasks.get(task_id)
        return task

    async def _assignee_command(
        self,
        agent_id: str | None,
        task_id: str,
        verb: str,
        make: Callable[[], Event],
    ) -> None:
        synced = False

        async def look_again() -> Plan[None]:
            nonlocal synced
            while True:
                task = await self._find(task_id)
                if task is None:
                    raise NotFoundError(f"unknown task {task_id!r}: cannot {verb} it")
                problem = self._refusal(task, agent_id, verb)
                if problem is None:
                    return (make(),), None
                if synced:
                    raise problem
                synced = True  # the projection may lag another process: look again
                await self.sync()

        def plan() -> Plan[None] | Awaitable[Plan[None]]:
            task = self.projection.tasks.get(task_id)  # the assignee's (usual): no coroutine
            if task is not None and self._refusal(task, agent_id, verb) is None:
                return (make(),), None
            return look_again()

        await self._execute(_task_subject(task_id), plan, what=f"{verb} of task {task_id!r}")

    @staticmethod
    def _refusal(task: Task, agent_id: str | None, verb: str) -> ConvergeError | None:
        if task.state.is_terminal:
            return InvalidStateError(
                f"task {task.id!r} is {task.state.value}: cannot {verb} it any more"
            )
        if agent_id is None:
            return None
        if task.state is not TaskState.ASSIGNED or task.assigned_to != agent_id:
            holder = "nobody" if task.assigned_to is None else repr(task.assigned_to)
            return NotAuthorizedError(
                f"agent {agent_id!r} is not authorized to {verb} task {task.id!r}: "
                f"it is assigned to {holder}"
            )
        return None
