"""The runtime's work part: claim what a :class:`Worker` accepts and run its ``handle``.

Woken by the task projection: each event that makes a task PENDING (submitted,
claim released, retry scheduled) adds its id to the candidates when the worker
accepts it, so no step walks every task ever seen; each claim tells the candidates
who else claims (:mod:`converge.runtime._candidates` shares the tasks out among the
claimers, so workers seldom race for one). The PENDING index is read once at start
and again when idle for ``rescan_interval_sec`` (events applied by a gap read reach
no listener).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Collection

from converge.coordination.task_manager import TaskManager
from converge.core.task import Task, TaskState
from converge.errors import ConvergeError, DecodeError
from converge.runtime._beats import Beats
from converge.runtime._candidates import Candidates
from converge.runtime._tracing import task_span
from converge.runtime.worker import Worker
from events import (
    RecordedEvent,
    TaskClaimed,
    TaskClaimReleased,
    TaskRetryScheduled,
    TaskSubmitted,
)

__all__ = ["WorkRunner"]

logger = logging.getLogger("converge.runtime.worker")

# Claims one worker awaits at once while it knows no other claimer: workers that do not
# know each other yet pick alike (at random among the oldest), and each claim in flight
# is one more chance to race. Once they know each other they share the tasks out, and
# only ``max_concurrency`` bounds the claims in flight (sent together, they are one
# write and one read for the broker and the process).
_ALONE_CLAIMS = 4


def failure_reason(
    exc: BaseException, attempt: int, message: str | None = None
) -> dict[str, object]:
    """Return the structured reason a failed attempt records."""
    return {
        "error": type(exc).__name__,
        "message": str(exc) if message is None else message,
        "attempt": attempt,
    }


class WorkRunner:
    """Claim tasks for one worker and run up to ``max_concurrency`` ``handle`` calls."""

    def __init__(
        self,
        worker: Worker,
        tasks: TaskManager,
        *,
        pool_ids: Callable[[], Collection[str] | None],
        metric: Callable[[str], None],
        rescan_interval_sec: float = 5.0,
    ) -> None:
        self.worker = worker
        self.tasks = tasks
        self._pool_ids = pool_ids
        self._metric = metric
        self._rescan_sec = rescan_interval_sec
        self._candidates = Candidates(worker.id)
        self._rescanned = 0.0
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(worker.max_concurrency)
        self._claim_gate = asyncio.Semaphore(_ALONE_CLAIMS)
        self._attempts: set[asyncio.Task[None]] = set()  # claiming, then handling
        self._handling: dict[str, None] = {}  # ids of the tasks whose handle runs
        self._loop: asyncio.Task[None] | None = None
        self._beats = Beats()  # when running attempts start their heartbeats
        self._intake = False
        self.completed = 0
        self.failed_attempts = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen to the projection, read the PENDING index once, start claiming."""
        self._intake = True
        self.tasks.add_listener(self._on_event)
        self._rescan()
        self._loop = asyncio.create_task(
            self._claim_loop(), name=f"converge-work-{self.worker.id[:8]}"
        )

    async def stop(self, drain_timeout_sec: float) -> None:
        """Stop claiming; let running ``handle`` calls finish, cancel them after the timeout.

        Claims still held afterwards are the runtime's to release.
        """
        self._intake = False
        self.tasks.remove_listener(self._on_event)
        self._wake.set()
        loop, self._loop = self._loop, None
        if loop is not None:  # it only waits for a slot or a candidate: no claim is lost
            loop.cancel()
            await asyncio.wait({loop}, timeout=drain_timeout_sec)
        # claims in flight complete (their record must not be lost), won ones are handled
        running = list(self._attempts)
        if running:
            _, pending = await asyncio.wait(running, timeout=drain_timeout_sec)
            for task in pending:
                logger.warning(
                    "worker %s: task still running after the %ss drain; cancelled",
                    self.worker.id,
                    drain_timeout_sec,
                )
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=drain_timeout_sec)
        self._beats.close()

    @property
    def running(self) -> list[str]:
        """Ids of the tasks whose ``handle`` runs now."""
        return list(self._handling)

    # -- candidates ----------------------------------------------------------------------

    def _takes(self, task: Task) -> bool:
        if task.state is not TaskState.PENDING:
            return False
        pools = self._pool_ids()
        if pools is not None and task.pool_id is not None and task.pool_id not in pools:
            return False
        try:
            return self.worker.accepts(task)
        except Exception as exc:  # accepts is user code: a failure means "no"
            logger.warning("worker %s: accepts(%s) raised %r", self.worker.id, task.id, exc)
            return False

    def _on_event(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, TaskClaimed):
            self._candidates.saw_claim(event.agent_id)
            return
        if isinstance(event, TaskSubmitted):
            task_id = event.task.get("id")
        elif isinstance(event, TaskClaimReleased | TaskRetryScheduled):
            task_id = event.task_id
        else:
            return
        task = self.tasks.get_task(task_id) if isinstance(task_id, str) else None
        if task is not None and self._takes(task) and self._candidates.add(task.id):
            self._wake.set()

    def _rescan(self) -> None:
        self._rescanned = time.monotonic()
        for task in self.tasks.list_pending_tasks():
            if self._takes(task):
                self._candidates.add(task.id)
        if len(self._candidates):
            self._wake.set()

    def _usable(self, task_id: str) -> Task | None:
        """The task ``task_id`` when this worker can still claim it."""
        task = self.tasks.get_task(task_id)
        return task if task is not None and self._takes(task) else None

    # -- claiming ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        """Start a claim attempt for each candidate while a slot is free.

        Attempts run side by side (up to ``max_concurrency``, claims and ``handle``
        calls together): a claim is a round trip, and one at a time would leave free
        slots idle while the broker answers.
        """
        while self._intake:
            await self._slots.acquire()  # a free slot; stop() cancels these waits
            gated = False
            try:
                if self._candidates.alone:
                    await self._claim_gate.acquire()
                    gated = True
                task = await self._next_candidate()
            except BaseException:
                if gated:
                    self._claim_gate.release()
                self._slots.release()
                raise
            if task is None:
                if gated:
                    self._claim_gate.release()
                self._slots.release()
                continue
            attempt = asyncio.create_task(
                self._claim_and_run(task, gated), name=f"converge-claim-{task.id[:8]}"
            )
            self._attempts.add(attempt)
            attempt.add_done_callback(self._done)

    def _done(self, attempt: asyncio.Task[None]) -> None:
        self._attempts.discard(attempt)
        self._slots.release()
        if not attempt.cancelled() and (exc := attempt.exception()) is not None:
            # A bug, not a refusal: say so; the slot is free and the worker goes on.
            logger.error(
                "worker %s: %s ended with %r",
                self.worker.id,
                attempt.get_name(),
                exc,
                exc_info=exc,
                extra={"agent_id": self.worker.id},
            )

    async def _next_candidate(self) -> Task | None:
        candidates = self._candidates
        while self._intake:
            task = candidates.pick(self._usable)
            if task is not None:
                return task
            self._wake.clear()
            # wake for a new candidate, when a peer's task falls due, or to rescan
            rescan_in = self._rescanned + self._rescan_sec - time.monotonic()
            steal_in = candidates.steal_in()
            wait = rescan_in if steal_in is None else min(steal_in, rescan_in)
            try:
                async with asyncio.timeout(max(wait, 0.001)):
                    await self._wake.wait()
            except TimeoutError:
                if time.monotonic() - self._rescanned >= self._rescan_sec:
                    self._rescan()
        return None

    async def _claim_and_run(self, task: Task, gated: bool) -> None:
        try:
            with task_span(self.tasks, "claim", task.id, self.worker.id):
                won = await self.tasks.claim(self.worker.id, task.id)
        except (ConvergeError, OSError, TimeoutError) as exc:  # the task stays claimable
            logger.warning("worker %s: claim of %s failed: %s", self.worker.id, task.id, exc)
            return
        finally:
            if gated:
                self._claim_gate.release()
        if not won:
            return
        self._metric("worker_claims_total")
        self._handling[task.id] = None
        try:
            await self._run(self.tasks.get_task(task.id) or task)
        finally:
            self._handling.pop(task.id, None)

    # -- running -------------------------------------------------------------------------

    async def _run(self, task: Task) -> None:
        with task_span(self.tasks, "process", task.id, self.worker.id):
            await self._run_attempt(task)

    async def _run_attempt(self, task: Task) -> None:
        worker, tasks = self.worker, self.tasks
        attempt = tasks.projection.attempts(task.id) + 1
        runner = asyncio.current_task()
        assert runner is not None
        # The heartbeat task starts a third of the claim's TTL in (one timer serves all
        # attempts): most attempts finish sooner and cost neither a task nor a timer.
        ttl = tasks.projection.claim_ttl(task.id)
        beat = _Beat()
        if ttl is not None:

            def start_heartbeat() -> None:
                lost = beat.lost = asyncio.Event()
                beat.task = asyncio.create_task(
                    self._heartbeat(task.id, ttl, runner, lost),
                    name=f"converge-heartbeat-{task.id[:8]}",
                )

            self._beats.add(runner, ttl / 3, start_heartbeat)
        try:
            result = await self._call_handle(task, attempt)
        except _AttemptFailed as failed:
            if beat.lost is not None and beat.lost.is_set():
                return
            await self._fail(task, failed.reason)
            return
        except asyncio.CancelledError:
            if beat.lost is not None and beat.lost.is_set() and self._intake:
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                logger.warning(
                    "worker %s lost its claim on %s; handle cancelled",
                    worker.id,
                    task.id,
                    extra={"agent_id": worker.id, "task_id": task.id},
                )
                return
            raise
        finally:
            self._beats.discard(runner)
            if beat.task is not None:
                beat.task.cancel()
                await asyncio.wait({beat.task}, timeout=5.0)
        try:
            await tasks.report(worker.id, task.id, result)
        except DecodeError as exc:
            await self._fail(task, failure_reason(exc, attempt))
            return
        except ConvergeError as exc:
            logger.warning(
                "worker %s: report of %s refused: %s",
                worker.id,
                task.id,
                exc,
                extra={"agent_id": worker.id, "task_id": task.id},
            )
            return
        self.completed += 1
        self._metric("worker_tasks_completed_total")

    async def _call_handle(self, task: Task, attempt: int) -> object:
        timeout = task.timeout_sec
        limit = None if timeout is None else asyncio.timeout(timeout)
        try:
            if self.worker.is_async_handle:
                outcome = self.worker.handle(task)
                assert inspect.isawaitable(outcome)
            else:
                outcome = asyncio.to_thread(self.worker.handle, task)
            if limit is None:  # no Timeout object per attempt when there is no limit
                return await outcome
            async with limit:
                return await outcome
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            expired = limit is not None and limit.expired()
            message = f"handle did not finish within {timeout}s" if expired else None
            raise _AttemptFailed(failure_reason(exc, attempt, message)) from exc
        except Exception as exc:  # handle is user code: its failure fails the attempt
            logger.info(
                "worker %s: handle(%s) raised %r",
                self.worker.id,
                task.id,
                exc,
                extra={"agent_id": self.worker.id, "task_id": task.id},
            )
            raise _AttemptFailed(failure_reason(exc, attempt)) from exc

    async def _fail(self, task: Task, reason: dict[str, object]) -> None:
        self.failed_attempts += 1
        self._metric("worker_attempts_failed_total")
        try:
            await self.tasks.fail_attempt(self.worker.id, task.id, reason)
        except ConvergeError as exc:
            logger.warning("worker %s: failing %s refused: %s", self.worker.id, task.id, exc)

    async def _heartbeat(
        self, task_id: str, ttl: float, runner: asyncio.Task[None], lost: asyncio.Event
    ) -> None:
        """Extend the claim now and a third of its TTL apart; cancel ``runner`` once lost."""
        while True:
            try:
                alive = await self.tasks.extend_claim(self.worker.id, task_id)
            except ConvergeError as exc:  # the broker may be back before the TTL runs out
                logger.warning(
                    "worker %s: heartbeat of %s failed: %s", self.worker.id, task_id, exc
                )
                alive = True
            if not alive:
                lost.set()
                runner.cancel()
                return
            await asyncio.sleep(ttl / 3)


class _Beat:
    """An attempt's heartbeat, once started, and whether it found the claim lost."""

    __slots__ = ("lost", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.lost: asyncio.Event | None = None


class _AttemptFailed(Exception):
    """``handle`` failed or timed out; ``reason`` is what the attempt records."""

    def __init__(self, reason: dict[str, object]) -> None:
        super().__init__(reason)
        self.reason = reason
