"""TaskProjection: the events of stream ``tasks`` folded into :class:`~converge.core.Task`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from converge.core.task import Task, TaskState
from converge.errors import DecodeError, InvalidStateError
from events import (
    RecordedEvent,
    TaskCancelled,
    TaskClaimed,
    TaskClaimReleased,
    TaskFailed,
    TaskReported,
    TaskSubmitted,
    subject,
)
from projections.base import Projection

__all__ = ["TASKS_STREAM", "TaskProjection"]

TASKS_STREAM = "tasks"
"""Stream kind of task events; one subject per task: ``tasks.<task_id>``."""


class TaskProjection(Projection):
    """Every task by id, its lifecycle state and the last sequence of its subject.

    Transitions (an event that does not fit is skipped and counted):

    - ``task.submitted``: a new task (a second submission of an id is skipped);
    - ``task.claimed``: PENDING -> ASSIGNED to the agent, ``claimed_at`` set;
    - ``task.reported``: ASSIGNED (to that agent) -> COMPLETED with the result;
    - ``task.failed``: not terminal -> FAILED, the reason as result (an ``agent_id``
      must be the assignee);
    - ``task.cancelled``: not terminal -> CANCELLED, assignment cleared;
    - ``task.claim_released``: ASSIGNED (to that agent) -> PENDING, assignment cleared.

    :attr:`tasks` and the objects in it belong to the projection: read, do not mutate.
    """

    name: ClassVar[str] = "tasks"
    streams: ClassVar[tuple[str, ...]] = (TASKS_STREAM,)

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self._pending: dict[str, None] = {}  # insertion-ordered set of PENDING ids
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

    # -- fold ------------------------------------------------------------------

    def fold(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, TaskSubmitted):
            # the same task (or DecodeError) as Task.from_dict, without its slow path
            task = Task._from_dict_fast(event.task)
            task_id = task.id
            if self.tasks.setdefault(task_id, task) is not task:  # one lookup, not two
                raise InvalidStateError(f"task {task_id!r} was already submitted")
            if task.state is TaskState.PENDING:
                self._pending[task_id] = None
            return
        if isinstance(event, TaskClaimed):
            task = self._task(event.task_id)
            self._expect(task, TaskState.PENDING, event.type)
            task.state = TaskState.ASSIGNED
            task.assigned_to = event.agent_id
            task.claimed_at = event.claimed_at
            self._pending.pop(task.id, None)
        elif isinstance(event, TaskReported):
            task = self._task(event.task_id)
            self._expect(task, TaskState.ASSIGNED, event.type, agent_id=event.agent_id)
            task.state = TaskState.COMPLETED
            task.result = event.result
        elif isinstance(event, TaskFailed):
            task = self._task(event.task_id)
            self._expect_open(task, event.type)
            if event.agent_id is not None and task.assigned_to != event.agent_id:
                raise InvalidStateError(
                    f"task {task.id!r} is not assigned to {event.agent_id!r}; {event.type} ignored"
                )
            task.state = TaskState.FAILED
            task.result = event.reason if event.details is None else event.details
            task.claimed_at = None
            self._pending.pop(task.id, None)
        elif isinstance(event, TaskCancelled):
            task = self._task(event.task_id)
            self._expect_open(task, event.type)
            task.state = TaskState.CANCELLED
            task.assigned_to = None
            task.claimed_at = None
            self._pending.pop(task.id, None)
        elif isinstance(event, TaskClaimReleased):
            task = self._task(event.task_id)
            self._expect(task, TaskState.ASSIGNED, event.type, agent_id=event.agent_id)
            task.state = TaskState.PENDING
            task.assigned_to = None
            task.claimed_at = None
            self._pending[task.id] = None
        else:
            raise DecodeError(f"{event.type} is not a task event")

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

    def snapshot_state(self) -> dict[str, Any]:
        return {
            "tasks": [task.to_dict() for task in self.tasks.values()],
            "pending": list(self._pending),
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
