"""TaskProjection: the events of stream ``tasks`` folded into :class:`~converge.core.Task`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from converge.core.task import Task, TaskState
from converge.errors import DecodeError, InvalidStateError
from events import (
    Event,
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
from events.tracecontext import TRACE_HEADERS
from projections.base import Projection

__all__ = ["TASKS_STREAM", "TaskProjection"]

TASKS_STREAM = "tasks"
"""Stream kind of task events; one subject per task: ``tasks.<task_id>``."""


class TaskProjection(Projection):
    """Every task by id, its lifecycle state and the last sequence of its subject.

    Transitions (an event that does not fit is skipped and counted):

    - ``task.submitted``: a new task (a second submission of an id is skipped);
    - ``task.claimed``: PENDING -> ASSIGNED to the agent, ``claimed_at`` set; the
      claim's lease runs ``claim_ttl_sec`` (the event's, else the task's constraint);
    - ``task.claim_extended``: ASSIGNED (to that agent), the lease restarts at
      ``extended_at``;
    - ``task.reported``: ASSIGNED (to that agent) -> COMPLETED with the result;
    - ``task.failed``: not terminal -> FAILED, the reason as result (an ``agent_id``
      must be the assignee);
    - ``task.retry_scheduled``: ASSIGNED (to that agent) -> PENDING, the attempt counted;
    - ``task.cancelled``: not terminal -> CANCELLED, assignment cleared;
    - ``task.claim_released``: ASSIGNED (to that agent) -> PENDING, assignment cleared.

    Besides every task by id it keeps indexes, so no query walks every task ever seen:
    the PENDING ids in order, the ids each agent holds, the lease expiry of each claim
    with a TTL, and the failed attempts of each task.

    :attr:`tasks` and the objects in it belong to the projection: read, do not mutate.
    """

    name: ClassVar[str] = "tasks"
    streams: ClassVar[tuple[str, ...]] = (TASKS_STREAM,)

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self._pending: dict[str, None] = {}  # insertion-ordered set of PENDING ids
        self._held: dict[str, dict[str, None]] = {}  # agent id -> ids it holds, in order
        self._leases: dict[str, tuple[float, float]] = {}  # task id -> (expires at, TTL)
        self._attempts: dict[str, int] = {}  # task id -> failed attempts so far
        self._traces: dict[str, dict[str, str]] = {}  # open task id -> its submit's trace
        super().__init__()

    # -- queries ---------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        """Return the task, or ``None``."""
        return self.tasks.get(task_id)

    def task_version(self, task_id: str) -> int:
        """Return the last sequence of the task's subject (0 when unknown)."""
        return self.versions.get(subject(TASKS_STREAM, task_id), 0)

    def pending(self) -> list[Task]:
        """Return the PENDING tasks, oldest first (a released task goes to the back)."""
        tasks = self.tasks
        return [tasks[task_id] for task_id in self._pending]

    def held_by(self, agent_id: str) -> list[Task]:
        """Return the ASSIGNED tasks ``agent_id`` holds, in the order it claimed them."""
        tasks = self.tasks
        return [tasks[task_id] for task_id in self._held.get(agent_id, ())]

    def holders(self) -> list[str]:
        """Return the ids of the agents that hold at least one task."""
        return list(self._held)

    def lease_expires_at(self, task_id: str) -> float | None:
        """Return when the claim on ``task_id`` expires (Unix seconds), ``None`` without TTL."""
        lease = self._leases.get(task_id)
        return None if lease is None else lease[0]

    def claim_ttl(self, task_id: str) -> float | None:
        """Return the TTL the claim on ``task_id`` was made with, ``None`` without one."""
        lease = self._leases.get(task_id)
        return None if lease is None else lease[1]

    def is_claim_expired(self, task_id: str, now: float) -> bool:
        """Whether ``task_id`` is ASSIGNED and its claim's lease ended at or before ``now``."""
        lease = self._leases.get(task_id)
        return lease is not None and now >= lease[0]

    def expired_claims(self, now: float) -> Iterator[Task]:
        """Yield the ASSIGNED tasks whose lease ended at or before ``now``."""
        tasks = self.tasks
        for task_id, (expires, _) in list(self._leases.items()):
            if now >= expires:
                yield tasks[task_id]

    def trace_headers(self, task_id: str) -> Mapping[str, str] | None:
        """Return the W3C trace headers its submission carried while a task is open.

        Whoever works on the task continues that trace (``None``: it carried none, or
        the task is finished, or the projection was restored from a snapshot).
        """
        return self._traces.get(task_id)

    def attempts(self, task_id: str) -> int:
        """Return how many attempts at ``task_id`` failed and were retried so far."""
        return self._attempts.get(task_id, 0)

    # -- fold ------------------------------------------------------------------

    def fold(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        fold = _FOLDS.get(type(event))
        if fold is None:  # a subclass of a task event, or not a task event
            fold = next((f for cls, f in _FOLDS.items() if isinstance(event, cls)), None)
            if fold is None:
                raise DecodeError(f"{event.type} is not a task event")
        fold(self, recorded, event)

    def _submitted(self, recorded: RecordedEvent, event: TaskSubmitted) -> None:
        # the same task (or DecodeError) as Task.from_dict, without its slow path
        task = Task._from_dict_fast(event.task)
        task_id = task.id
        if self.tasks.setdefault(task_id, task) is not task:  # one lookup, not two
            raise InvalidStateError(f"task {task_id!r} was already submitted")
        if task.state is TaskState.PENDING:
            self._pending[task_id] = None
        headers = recorded.headers
        if headers is not None and "traceparent" in headers and not task.state.is_terminal:
            self._traces[task_id] = {k: headers[k] for k in TRACE_HEADERS if k in headers}

    def _claimed(self, recorded: RecordedEvent, event: TaskClaimed) -> None:
        task = self._task(event.task_id)
        if task.state is not TaskState.PENDING:
            self._expect(task, TaskState.PENDING, event.type)
        agent_id = event.agent_id
        task._set_claim(TaskState.ASSIGNED, agent_id, event.claimed_at)
        task_id = task.id
        self._pending.pop(task_id, None)
        held = self._held.get(agent_id)
        if held is None:
            held = self._held[agent_id] = {}
        held[task_id] = None
        ttl = event.claim_ttl_sec
        if ttl is None:
            ttl = task.claim_ttl_sec
        if ttl is not None:
            self._leases[task_id] = (event.claimed_at + ttl, ttl)

    def _claim_extended(self, recorded: RecordedEvent, event: TaskClaimExtended) -> None:
        task = self._task(event.task_id)
        self._expect(task, TaskState.ASSIGNED, event.type, agent_id=event.agent_id)
        lease = self._leases.get(task.id)
        if lease is not None:
            expires, ttl = lease
            self._leases[task.id] = (max(expires, event.extended_at + ttl), ttl)

    def _reported(self, recorded: RecordedEvent, event: TaskReported) -> None:
        task = self._task(event.task_id)
        if task.state is not TaskState.ASSIGNED or task.assigned_to != event.agent_id:
            self._expect(task, TaskState.ASSIGNED, event.type, agent_id=event.agent_id)
        task._set_outcome(TaskState.COMPLETED, event.result)
        self._unassign(task)
        self._traces.pop(task.id, None)

    def _retry_scheduled(self, recorded: RecordedEvent, event: TaskRetryScheduled) -> None:
        task = self._task(event.task_id)
        self._expect(task, TaskState.ASSIGNED, event.type, agent_id=event.agent_id)
        self._unassign(task)
        task._set_claim(TaskState.PENDING, None, None)
        self._attempts[task.id] = max(self._attempts.get(task.id, 0), event.attempt)
        self._pending[task.id] = None

    def _failed(self, recorded: RecordedEvent, event: TaskFailed) -> None:
        task = self._task(event.task_id)
        self._expect_open(task, event.type)
        if event.agent_id is not None and task.assigned_to != event.agent_id:
            raise InvalidStateError(
                f"task {task.id!r} is not assigned to {event.agent_id!r}; {event.type} ignored"
            )
        self._unassign(task)
        task._set_outcome(
            TaskState.FAILED, event.reason if event.details is None else event.details
        )
        self._traces.pop(task.id, None)
        task.claimed_at = None
        self._pending.pop(task.id, None)

    def _cancelled(self, recorded: RecordedEvent, event: TaskCancelled) -> None:
        task = self._task(event.task_id)
        self._expect_open(task, event.type)
        self._unassign(task)
        task._set_claim(TaskState.CANCELLED, None, None)
        self._traces.pop(task.id, None)
        self._pending.pop(task.id, None)

    def _claim_released(self, recorded: RecordedEvent, event: TaskClaimReleased) -> None:
        task = self._task(event.task_id)
        self._expect(task, TaskState.ASSIGNED, event.type, agent_id=event.agent_id)
        self._unassign(task)
        task._set_claim(TaskState.PENDING, None, None)
        self._pending[task.id] = None

    def _unassign(self, task: Task) -> None:
        """Drop ``task`` from the holder and lease indexes (before its state changes)."""
        self._leases.pop(task.id, None)
        holder = task.assigned_to
        if holder is None:
            return
        held = self._held.get(holder)
        if held is not None:
            held.pop(task.id, None)
            if not held:
                del self._held[holder]

    def _task(self, task_id: str) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise InvalidStateError(f"unknown task {task_id!r}")
        return task

    @staticmethod
    def _expect(task: Task, state: TaskState, what: str, *, agent_id: str | None = None) -> None:
        if task.state is not state:
            raise InvalidStateError(f"task {task.id!r} is {task.state.value}; {what} ignored")
        if agent_id is not None and task.assigned_to != agent_id:
            raise InvalidStateError(
                f"task {task.id!r} is assigned to {task.assigned_to!r}, not {agent_id!r}; "
                f"{what} ignored"
            )

    @staticmethod
    def _expect_open(task: Task, what: str) -> None:
        if task.state.is_terminal:
            raise InvalidStateError(f"task {task.id!r} is {task.state.value}; {what} ignored")

    # -- state -----------------------------------------------------------------

    def clear(self) -> None:
        self.tasks = {}
        self._pending = {}
        self._held = {}
        self._leases = {}
        self._attempts = {}

    def snapshot_state(self) -> dict[str, Any]:
        return {
            "tasks": [task.to_dict() for task in self.tasks.values()],
            "pending": list(self._pending),
            "leases": {task_id: list(lease) for task_id, lease in self._leases.items()},
            "attempts": dict(self._attempts),
        }

    def restore_state(self, state: Mapping[str, Any]) -> None:
        tasks = [Task._from_dict_fast(item) for item in state["tasks"]]
        self.tasks = {task.id: task for task in tasks}
        pending = {str(task_id): None for task_id in state["pending"]}
        if any(
            task_id not in self.tasks or self.tasks[task_id].state is not TaskState.PENDING
            for task_id in pending
        ):
            raise DecodeError("tasks snapshot lists a pending task that is not PENDING")
        self._pending = pending
        held: dict[str, dict[str, None]] = {}
        for task in tasks:
            if task.state is TaskState.ASSIGNED and task.assigned_to is not None:
                held.setdefault(task.assigned_to, {})[task.id] = None
        self._held = held
        # snapshots written before leases existed: a lease from the task's own TTL
        leases = state.get("leases")
        if leases is None:
            leases = {
                task.id: [task.claimed_at + ttl, ttl]
                for task in tasks
                if task.state is TaskState.ASSIGNED
                and task.claimed_at is not None
                and (ttl := task.claim_ttl_sec) is not None
            }
        self._leases = {str(k): (float(v[0]), float(v[1])) for k, v in leases.items()}
        self._attempts = {str(k): int(v) for k, v in state.get("attempts", {}).items()}


_Fold = Callable[[TaskProjection, RecordedEvent, Any], None]
#: the fold of each task event class (looked up by the event's exact class)
_FOLDS: dict[type[Event], _Fold] = {
    TaskSubmitted: TaskProjection._submitted,
    TaskClaimed: TaskProjection._claimed,
    TaskClaimExtended: TaskProjection._claim_extended,
    TaskReported: TaskProjection._reported,
    TaskRetryScheduled: TaskProjection._retry_scheduled,
    TaskFailed: TaskProjection._failed,
    TaskCancelled: TaskProjection._cancelled,
    TaskClaimReleased: TaskProjection._claim_released,
}
