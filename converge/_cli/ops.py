"""The work of ``tasks``, ``agents`` and ``pools``: commands on the task service, reads of
the projections, each on its own connection to the broker.

Listings rebuild a projection from its stream and print it; they never append.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from converge._cli.broker import event_log
from converge.config import ConvergeConfig
from converge.core.task import Task, TaskState
from converge.errors import ConvergeError, ConvergeTimeoutError, NotFoundError
from events import EventLog, RecordedEvent
from events.subjects import encode_token

if TYPE_CHECKING:
    from converge.coordination.task_manager import TaskManager
    from projections.verify import SignatureVerifier

__all__ = [
    "agent_rows",
    "cancel_task",
    "pool_rows",
    "submit_tasks",
    "sweep_claims",
    "task_history",
    "task_row",
    "task_rows",
    "wait_task",
]


def task_row(task: Task) -> dict[str, Any]:
    """Return a task as a JSON-ready dict (``id``, ``state``, ``assigned_to``, ``result``...)."""
    return task.to_dict()


async def _verifier(cfg: ConvergeConfig, log: EventLog) -> SignatureVerifier | None:
    """Return a verifier of the namespace's signature policy (``None``: ``--no-verify``)."""
    from converge.security import EventSecurity

    security = EventSecurity(verify=cfg.verify, require=False, trusted=frozenset())
    await security.load_policy(log, record=False, trusted_signers=cfg.trusted_signers)
    return security.verifier()


async def _tasks(cfg: ConvergeConfig, log: EventLog) -> dict[str, Task]:
    from projections import ProjectionRunner, TaskProjection

    projection = TaskProjection()
    await ProjectionRunner(projection, log, verifier=await _verifier(cfg, log)).rebuild()
    return dict(projection.tasks)


@contextlib.asynccontextmanager
async def _task_service(
    cfg: ConvergeConfig, *, service_acts: bool = True
) -> AsyncIterator[TaskManager]:
    """Yield a started TaskManager whose events the service key signs, verifying.

    ``service_acts=False``: its events act only for the service key itself (a submission),
    which every verifier accepts, so an untrusted key is not worth a warning.
    """
    from converge.coordination.task_manager import TaskManager
    from converge.security import EventSecurity

    security = EventSecurity.signing(cfg.signing_key_path, verify=cfg.verify)
    async with event_log(cfg, signer=security.ring) as log:
        await security.load_policy(
            log, record=False, trusted_signers=cfg.trusted_signers, warn_untrusted=service_acts
        )
        async with TaskManager(log, verifier=security.verifier()) as tm:
            yield tm


async def submit_tasks(cfg: ConvergeConfig, tasks: list[Task]) -> list[str]:
    """Submit ``tasks`` in order; return their ids."""
    from converge.security import load_or_create_key

    signer_id = load_or_create_key(cfg.signing_key_path).fingerprint
    async with _task_service(cfg, service_acts=False) as tm:
        # submitted as the service key's own act: accepted in any namespace that
        # verifies, trusted or not; its id is in the events
        return [await tm.submit(task, actor=signer_id) for task in tasks]


async def task_rows(
    cfg: ConvergeConfig,
    *,
    state: TaskState | None = None,
    pool: str | None = None,
    agent: str | None = None,
) -> list[dict[str, Any]]:
    """Return the namespace's tasks (oldest first) that match every given filter."""
    async with event_log(cfg, read_only=True) as log:
        tasks = await _tasks(cfg, log)
    return [
        task_row(t)
        for t in tasks.values()
        if (state is None or t.state is state)
        and (pool is None or t.pool_id == pool)
        and (agent is None or t.assigned_to == agent)
    ]


def _event_row(recorded: RecordedEvent) -> dict[str, Any]:
    event = recorded.event
    return {
        "seq": recorded.sequence,
        "time": recorded.time,
        "type": event.type,
        "actor": event.actor,
        "data": event.payload(),
    }


async def task_history(cfg: ConvergeConfig, task_id: str) -> dict[str, Any]:
    """Return the task ``task_id`` with its events; raise ``ConvergeError`` when unknown."""
    async with event_log(cfg, read_only=True) as log:
        history = [
            _event_row(r)
            async for r in log.read(stream="tasks", subject=f"tasks.{encode_token(task_id)}")
        ]
        if not history:
            raise ConvergeError(f"no task {task_id!r} in namespace {cfg.namespace!r}")
        task = (await _tasks(cfg, log)).get(task_id)
    if task is None:  # pragma: no cover - the subject has events, so the fold has the task
        raise ConvergeError(f"task {task_id!r} has events but no state")
    return {**task_row(task), "events": history}


async def wait_task(cfg: ConvergeConfig, task_id: str, timeout: float | None) -> Task:  # noqa: ASYNC109
    """Return the task once it is terminal (woken by its events, never by polling).

    Raises ``ConvergeTimeoutError`` after ``timeout`` seconds and ``NotFoundError`` when
    the task does not exist.
    """
    from converge.coordination.task_manager import TaskManager

    async with event_log(cfg, read_only=True) as log, TaskManager(log) as tm:
        if tm.get_task(task_id) is None:
            raise NotFoundError(f"no task {task_id!r} in namespace {cfg.namespace!r}")
        try:
            return await tm.wait(task_id, timeout=timeout)
        except TimeoutError:
            raise ConvergeTimeoutError(
                f"task {task_id!r} not finished after {timeout:g}s"
            ) from None


async def cancel_task(cfg: ConvergeConfig, task_id: str) -> Task:
    """Cancel ``task_id``; return it. Raise ``ConvergeError`` when unknown or finished."""
    async with _task_service(cfg) as tm:
        task = tm.get_task(task_id)
        if task is None:
            raise ConvergeError(f"no task {task_id!r} in namespace {cfg.namespace!r}")
        if not await tm.cancel_task(task_id):
            task = tm.get_task(task_id) or task
            raise ConvergeError(f"task {task_id!r} is {task.state.value}; it cannot be cancelled")
        final = tm.get_task(task_id)
        assert final is not None
        return final


async def sweep_claims(cfg: ConvergeConfig) -> list[str]:
    """Release every expired claim; return the ids of the tasks released."""
    async with _task_service(cfg) as tm:
        return await tm.release_expired_claims()


async def agent_rows(cfg: ConvergeConfig) -> list[dict[str, Any]]:
    """Return the agents registered with discovery: id, capabilities, topics, metadata."""
    from projections import DiscoveryProjection, ProjectionRunner

    async with event_log(cfg, read_only=True) as log:
        projection = DiscoveryProjection()
        await ProjectionRunner(projection, log, verifier=await _verifier(cfg, log)).rebuild()
    return [
        {
            "id": agent_id,
            "capabilities": d.capability_names,
            "topics": [t.namespace for t in d.topics],
            "metadata": dict(d.metadata),
        }
        for agent_id, d in projection.descriptors.items()
    ]


async def pool_rows(cfg: ConvergeConfig) -> list[dict[str, Any]]:
    """Return every pool as plain data (id, topics, agents, policies)."""
    from projections import PoolProjection, ProjectionRunner

    async with event_log(cfg, read_only=True) as log:
        projection = PoolProjection()
        await ProjectionRunner(projection, log, verifier=await _verifier(cfg, log)).rebuild()
    return [pool.to_dict() for pool in projection.pools.values()]
