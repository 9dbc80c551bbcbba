# Over 400 lines: one handler per decision type of the seed, each short, kept together.
"""Executors carry out an agent's decisions; the standard one records each as an event.

:class:`StandardExecutor` runs every decision type of :mod:`converge.core.decisions`
against the managers, protocols, network and tools it was given. Each decision is run
on its own: a failing decision is logged and recorded with outcome ``error`` and the
remaining decisions still run. With a ``decision_log`` every executed decision is
appended as ``DecisionExecuted`` on ``decisions.<agent_id>``: ``execute`` records a
tick's outcomes with one pipelined ``append_many`` once its decisions have run (still
one event per decision, in order; also on cancellation), except with tracing on, where
each is appended inside its decision's span; ``execute_one`` appends at once.
Consecutive ``SubmitTask`` decisions of one tick run side by side (up to
``_SUBMITS_AT_ONCE`` at a time): each submits a task of its own, so none waits on another,
and their publishes share round trips; their ``task.submitted`` events may then reach the
stream in a slightly different order than the decisions, their records keep it.
Consecutive ``ClaimTask`` decisions on distinct tasks run side by side the same way
(each claim is its own task's command), unless resource limits count the tasks held,
which a claim must see its predecessors' result for.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from converge.core.decisions import (
    AcceptProposal,
    ClaimTask,
    CreatePool,
    Decision,
    Delegate,
    InvokeTool,
    JoinPool,
    LeavePool,
    Propose,
    RejectProposal,
    ReportTask,
    RevokeDelegation,
    SendMessage,
    SubmitBid,
    SubmitTask,
    Vote,
    jsonable,
)
from converge.core.message import Message
from converge.core.tools import ToolRegistry
from converge.errors import (
    ConfigError,
    ConvergeError,
    EventLogError,
    NotFoundError,
    PolicyError,
)
from converge.observability.otel import instruments
from converge.policy.safety import (
    ActionPolicy,
    ResourceLimits,
    normalize_action,
    validate_safety,
)
from converge.runtime._intents import forget_claims, note_claims
from converge.runtime._tracing import task_span
from converge.runtime.deps import (
    MetricsSink,
    PoolService,
    ReplayRecorder,
    TaskService,
)
from events import DecisionExecuted, EventLog, VoteCast, subject
from events.tracecontext import tracing_enabled

if TYPE_CHECKING:
    from converge.coordination.bidding import BiddingProtocol
    from converge.coordination.delegation import DelegationProtocol
    from converge.coordination.negotiation import NegotiationProtocol

__all__ = ["DecisionHandler", "DecisionOutcome", "Executor", "StandardExecutor"]

logger = logging.getLogger(__name__)

DecisionHandler = Callable[[Decision], Any]
"""A custom handler: ``handler(decision)`` returning a result, possibly awaitable."""


@dataclass(frozen=True)
class DecisionOutcome:
    """What executing one decision gave: ``outcome`` is ``ok`` or ``error``."""

    decision: Decision
    outcome: str
    result: Any = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the decision ran without error."""
        return self.outcome == "ok"


@runtime_checkable
class Executor(Protocol):
    """Carries out decisions (one call per loop iteration)."""

    async def execute(self, decisions: Sequence[Decision]) -> Sequence[DecisionOutcome] | None:
        """Execute ``decisions`` in order; never let one decision's failure stop the rest."""
        ...


class _Sender(Protocol):
    async def send(self, message: Message) -> Any: ...


_SUBMITS_AT_ONCE = 256  # consecutive SubmitTask decisions run side by side


def _policy_allows(policy: object, decision: Decision, agent_id: str) -> bool:
    is_allowed = getattr(policy, "is_allowed", None)
    if not callable(is_allowed):
        raise ConfigError(f"safety_policy action policy {policy!r} has no is_allowed()")
    for args in ((decision.type, agent_id), (decision.type,), (decision,)):
        try:
            return bool(is_allowed(*args))
        except TypeError:
            continue
    raise ConfigError(f"cannot call {type(policy).__name__}.is_allowed for a decision")


class StandardExecutor:
    """Execute decisions for ``agent_id`` with the given collaborators.

    ``network`` sends messages (an ``AgentNetwork`` or a transport: anything with an
    async ``send(message)``). ``bidding_protocols`` maps auction ids to protocols.
    ``safety_policy`` is a ``(ResourceLimits | None, ActionPolicy | None)`` pair; a
    decision the action policy refuses (or a tool it denies by name), a submission or a
    claim of a task whose constraints exceed the limits, and a claim of one task more
    than ``max_tasks``, is recorded as an error (``PolicyError``).
    ``tool_allowlist`` limits which tools may run; ``tool_timeout_sec`` bounds each
    tool call. ``custom_handlers`` maps a decision type name (or class) to a handler
    that replaces the built-in one. Votes are recorded as ``VoteCast`` events on
    ``coord.vote.<vote_id>`` in the negotiation protocol's log (else ``decision_log``);
    with a ``votes_store`` dict (the seed design's), each vote is also appended there as
    ``votes_store[vote_id] -> [(agent_id, option), ...]``, and no log is then needed.
    """

    def __init__(
        self,
        agent_id: str,
        network: _Sender | None,
        task_manager: TaskService | None,
        pool_manager: PoolService | None,
        *,
        metrics_collector: MetricsSink | None = None,
        bidding_protocols: Mapping[str, BiddingProtocol] | None = None,
        negotiation_protocol: NegotiationProtocol | None = None,
        delegation_protocol: DelegationProtocol | None = None,
        safety_policy: tuple[ResourceLimits | None, ActionPolicy | None] | None = None,
        replay_log: ReplayRecorder | None = None,
        tool_registry: ToolRegistry | None = None,
        custom_handlers: Mapping[str | type[Decision], DecisionHandler] | None = None,
        tool_timeout_sec: float | None = None,
        tool_allowlist: Collection[str] | None = None,
        decision_log: EventLog | None = None,
        votes_store: MutableMapping[str, list[tuple[str, Any]]] | None = None,
    ) -> None:
        if not isinstance(agent_id, str) or not agent_id:
            raise ConfigError(f"agent_id must be a non-empty str, got {agent_id!r}")
        if tool_timeout_sec is not None and tool_timeout_sec <= 0:
            raise ConfigError(f"tool_timeout_sec must be > 0 seconds, got {tool_timeout_sec!r}")
        if safety_policy is not None and (
            not isinstance(safety_policy, tuple) or len(safety_policy) != 2
        ):
            raise ConfigError(
                "safety_policy must be a (ResourceLimits | None, ActionPolicy | None) pair"
            )
        self.agent_id = agent_id
        self.network = network
        self.task_manager = task_manager
        self.pool_manager = pool_manager
        self.metrics_collector = metrics_collector
        self.bidding_protocols: dict[str, BiddingProtocol] = dict(bidding_protocols or {})
        self.negotiation_protocol = negotiation_protocol
        self.delegation_protocol = delegation_protocol
        limits, action_policy = safety_policy or (None, None)
        self.resource_limits: ResourceLimits | None = limits
        self.action_policy: ActionPolicy | None = action_policy
        self.replay_log = replay_log
        self.tool_registry = tool_registry
        self.tool_timeout_sec = tool_timeout_sec
        self.tool_allowlist = frozenset(tool_allowlist) if tool_allowlist is not None else None
        self.decision_log = decision_log
        self.votes_store = votes_store
        self._custom: dict[str, DecisionHandler] = {}
        for key, handler in (custom_handlers or {}).items():
            name = key if isinstance(key, str) else getattr(key, "type", None)
            if not isinstance(name, str) or not callable(handler):
                raise ConfigError(
                    f"custom handler for {key!r} must map a decision type to a callable"
                )
            self._custom[name] = handler
        self._builtin: dict[type[Decision], Callable[[Any], Awaitable[Any]]] = {
            SendMessage: self._send_message,
            JoinPool: self._join_pool,
            LeavePool: self._leave_pool,
            CreatePool: self._create_pool,
            SubmitTask: self._submit_task,
            ClaimTask: self._claim_task,
            ReportTask: self._report_task,
            SubmitBid: self._submit_bid,
            Vote: self._vote,
            Propose: self._propose,
            AcceptProposal: self._accept,
            RejectProposal: self._reject,
            Delegate: self._delegate,
            RevokeDelegation: self._revoke,
            InvokeTool: self._invoke_tool,
        }
        self.executed = 0
        self.failed = 0

    async def execute(self, decisions: Sequence[Decision]) -> list[DecisionOutcome]:
        """Execute ``decisions`` in order and return one outcome per decision.

        Never raises for a failing decision (it is logged, counted and recorded); only
        cancellation propagates.
        """
        claims = self._note_claims(decisions)
        try:
            return await self._execute(decisions)
        finally:
            if claims:
                forget_claims(self.task_manager, self.agent_id, claims)

    def _note_claims(self, decisions: Sequence[Decision]) -> list[str]:
        """Note the tick's claims, so the process's other agents are not shown those tasks."""
        if self.task_manager is None or "claim_task" in self._custom:
            return []
        ids = [d.task_id for d in decisions if isinstance(d, ClaimTask)]
        return note_claims(self.task_manager, self.agent_id, ids) if ids else []

    async def _execute(self, decisions: Sequence[Decision]) -> list[DecisionOutcome]:
        outcomes: list[DecisionOutcome] = []
        if tracing_enabled():  # each record inside its decision's span carries its trace
            for decision in decisions:
                outcomes.append(await self.execute_one(decision))
            return outcomes
        try:
            at = 0
            while at < len(decisions):
                run = self._independent_from(decisions, at)
                if run > 1:
                    await self._run_side_by_side(decisions[at : at + run], outcomes)
                    at += run
                else:
                    outcomes.append(await self._run_one(decisions[at]))
                    at += 1
        finally:  # one pipelined append for the batch; still one event per decision
            await self._record_many(outcomes)
        return outcomes

    def _independent_from(self, decisions: Sequence[Decision], at: int) -> int:
        """How many decisions from ``at`` may run side by side (at most a batch).

        A run of ``SubmitTask``, or of ``ClaimTask`` on distinct tasks; ``0`` or ``1``
        when the decision at ``at`` runs on its own.
        """
        kind = type(decisions[at])
        if kind is SubmitTask:
            if "submit_task" in self._custom:
                return 0
        elif kind is ClaimTask:
            if "claim_task" in self._custom or self.resource_limits is not None:
                return 0
        else:
            return 0
        end = min(len(decisions), at + _SUBMITS_AT_ONCE)
        run = 0
        seen: set[str] = set()
        while at + run < end and type(decision := decisions[at + run]) is kind:
            if isinstance(decision, ClaimTask):
                if decision.task_id in seen:  # a second claim of one task waits for the first
                    break
                seen.add(decision.task_id)
            run += 1
        return run

    async def _run_side_by_side(
        self, batch: Sequence[Decision], outcomes: list[DecisionOutcome]
    ) -> None:
        """Run independent decisions at once; add the outcomes of those that ran, in order.

        On cancellation the unfinished ones are cancelled and awaited, so the outcomes of
        the finished ones are still recorded and nothing keeps running.
        """
        running = [asyncio.ensure_future(self._run_one(decision)) for decision in batch]
        try:
            await asyncio.gather(*running)
        finally:
            for task in running:
                task.cancel()
            await asyncio.wait(running)
            outcomes.extend(
                task.result()
                for task in running
                if not task.cancelled() and task.exception() is None
            )

    async def execute_one(self, decision: Decision) -> DecisionOutcome:
        """Execute one decision and record its outcome.

        A decision on a task runs (and is recorded) in a span of the task's trace (see
        ``_tracing``).
        """
        task_id = getattr(decision, "task_id", None)
        if isinstance(task_id, str) and task_id:
            kind = getattr(decision, "type", type(decision).__name__)
            with task_span(self.task_manager, f"execute {kind}", task_id, self.agent_id):
                return await self._run_and_record(decision)
        return await self._run_and_record(decision)

    async def _run_and_record(self, decision: Decision) -> DecisionOutcome:
        outcome = await self._run_one(decision)
        await self._record(outcome)
        return outcome

    async def _run_one(self, decision: Decision) -> DecisionOutcome:
        started = time.perf_counter()
        try:
            if not isinstance(decision, Decision):
                raise ConfigError(
                    f"not a decision: {type(decision).__name__}; "
                    "decide() must return Decision objects"
                )
            self._check_policy(decision)
            result = await self._dispatch(decision)
            outcome = DecisionOutcome(decision, "ok", result=result)
            self.executed += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of one decision is recorded, the rest go on
            self.failed += 1
            message = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "agent %s: decision %s failed: %s",
                self.agent_id,
                getattr(decision, "type", type(decision).__name__),
                message,
                extra={"agent_id": self.agent_id},
            )
            outcome = DecisionOutcome(decision, "error", error=message)
        self._metrics(outcome, time.perf_counter() - started)
        instruments.decision(
            getattr(decision, "type", type(decision).__name__), outcome.outcome == "ok"
        )
        return outcome

    # -- plumbing ----------------------------------------------------------------

    def _check_policy(self, decision: Decision) -> None:
        if self.action_policy is not None and not _policy_allows(
            self.action_policy, decision, self.agent_id
        ):
            raise PolicyError(
                f"the action policy does not allow {decision.type!r} for agent {self.agent_id}"
            )

    async def _dispatch(self, decision: Decision) -> Any:
        custom = self._custom.get(decision.type)
        if custom is not None:
            result = custom(decision)
            return await result if inspect.isawaitable(result) else result
        for cls in type(decision).__mro__:
            handler = self._builtin.get(cls)
            if handler is not None:
                return await handler(decision)
        raise ConfigError(
            f"no handler for decision type {decision.type!r}; pass one in custom_handlers"
        )

    def _metrics(self, outcome: DecisionOutcome, elapsed_sec: float) -> None:
        collector = self.metrics_collector
        if collector is None:
            return
        kind = getattr(outcome.decision, "type", type(outcome.decision).__name__)
        try:
            collector.inc("decisions_executed_total", type=kind, outcome=outcome.outcome)
            collector.inc("decision_seconds_total", elapsed_sec, type=kind)
            collector.inc("decisions_executed")  # the seed design's unlabelled counter
        except Exception as exc:  # metrics never break execution
            logger.warning("metrics collector failed: %s", exc)

    async def _record(self, outcome: DecisionOutcome) -> None:
        await self._record_many([outcome])

    async def _record_many(self, outcomes: Sequence[DecisionOutcome]) -> None:
        if self.decision_log is None or not outcomes:
            return
        events = [self._decision_event(outcome) for outcome in outcomes]
        where = subject("decisions", self.agent_id)
        try:
            if len(events) == 1:
                await self.decision_log.append(events[0], subject=where)
            else:
                await self.decision_log.append_many([(event, where) for event in events])
        except (ConvergeError, OSError) as exc:
            kinds = Counter(event.decision for event in events)
            logger.error(
                "agent %s: could not record %d decision(s) (%s): %s",
                self.agent_id,
                len(events),
                ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in kinds.items()),
                exc,
            )

    def _decision_event(self, outcome: DecisionOutcome) -> DecisionExecuted:
        decision = outcome.decision
        try:
            detail = decision.to_dict() if isinstance(decision, Decision) else {}
        except Exception:  # a decision that cannot describe itself is still recorded
            detail = {}
        detail.pop("type", None)
        if outcome.ok and outcome.result is not None:
            detail["result"] = jsonable(_plain(outcome.result))
        return DecisionExecuted(
            agent_id=self.agent_id,
            decision=getattr(decision, "type", type(decision).__name__),
            detail=detail,
            outcome=outcome.outcome,
            error=outcome.error,
            actor=self.agent_id,
        )

    # -- handlers ------------------------------------------------------------------

    def _require(self, value: Any, what: str, decision: Decision) -> Any:
        if value is None:
            raise ConfigError(f"cannot execute {decision.type!r}: this executor has no {what}")
        return value

    async def _send_message(self, decision: SendMessage) -> None:
        network = self._require(self.network, "network", decision)
        await network.send(decision.message)
        if self.metrics_collector is not None:
            try:
                self.metrics_collector.inc("messages_sent")
            except Exception as exc:  # metrics never break execution
                logger.warning("metrics collector failed: %s", exc)
        if self.replay_log is not None:
            try:
                self.replay_log.record_message(
                    decision.message, direction="outbound", agent_id=self.agent_id
                )
            except Exception as exc:  # the replay log never fails a sent message
                logger.warning("agent %s: replay log failed: %s", self.agent_id, exc)

    async def _join_pool(self, decision: JoinPool) -> bool:
        pm = self._require(self.pool_manager, "pool manager", decision)
        return bool(await pm.join_pool(self.agent_id, decision.pool_id))

    async def _leave_pool(self, decision: LeavePool) -> Any:
        pm = self._require(self.pool_manager, "pool manager", decision)
        return _plain(await pm.leave_pool(self.agent_id, decision.pool_id))

    async def _create_pool(self, decision: CreatePool) -> str | None:
        pm = self._require(self.pool_manager, "pool manager", decision)
        pool = await pm.create_pool(dict(decision.spec))
        pool_id = getattr(pool, "id", None)
        return pool_id if isinstance(pool_id, str) else None

    async def _submit_task(self, decision: SubmitTask) -> str:
        tm = self._require(self.task_manager, "task manager", decision)
        if self.resource_limits is not None:
            validate_safety(decision.task, self.resource_limits)
        return str(await tm.submit(decision.task, actor=self.agent_id))  # signed as the agent

    async def _claim_task(self, decision: ClaimTask) -> bool:
        tm = self._require(self.task_manager, "task manager", decision)
        if self.resource_limits is not None:
            task = tm.get_task(decision.task_id)
            if task is not None:
                held = len(tm.list_tasks_held_by(self.agent_id))  # an index, not a scan
                validate_safety(task, self.resource_limits, active_tasks=held)
        return bool(await tm.claim(self.agent_id, decision.task_id))

    async def _report_task(self, decision: ReportTask) -> None:
        tm = self._require(self.task_manager, "task manager", decision)
        await tm.report(self.agent_id, decision.task_id, decision.result)

    async def _submit_bid(self, decision: SubmitBid) -> bool:
        protocol = self.bidding_protocols.get(decision.auction_id)
        if protocol is None:
            raise NotFoundError(
                f"no bidding protocol for auction {decision.auction_id!r}; "
                f"known: {sorted(self.bidding_protocols)}"
            )
        return await protocol.submit_bid(self.agent_id, decision.amount, decision.content)

    async def _vote(self, decision: Vote) -> int:
        log = (
            self.negotiation_protocol.event_log
            if self.negotiation_protocol is not None
            else self.decision_log
        )
        if self.votes_store is not None:
            ballot = self.votes_store.setdefault(decision.vote_id, [])
            ballot.append((self.agent_id, decision.option))
            if log is None:
                return len(ballot)
        if log is None:
            raise ConfigError(
                "cannot record a vote: give the executor a negotiation_protocol or a decision_log"
            )
        event = VoteCast(
            ballot_id=decision.vote_id,
            voter_id=self.agent_id,
            choice=jsonable(decision.option),
            actor=self.agent_id,
        )
        try:
            recorded = await log.append(event, subject=subject("coord", "vote", decision.vote_id))
        except OSError as exc:
            raise EventLogError(
                f"could not record the vote on {decision.vote_id!r}: {exc}"
            ) from exc
        return recorded.sequence

    async def _propose(self, decision: Propose) -> str:
        protocol = self._require(self.negotiation_protocol, "negotiation protocol", decision)
        proposal_id = await protocol.make_proposal(
            decision.session_id, self.agent_id, decision.proposal_content
        )
        return str(proposal_id)

    async def _accept(self, decision: AcceptProposal) -> bool:
        protocol = self._require(self.negotiation_protocol, "negotiation protocol", decision)
        return bool(await protocol.accept(decision.session_id, decision.proposal_id, self.agent_id))

    async def _reject(self, decision: RejectProposal) -> None:
        protocol = self._require(self.negotiation_protocol, "negotiation protocol", decision)
        await protocol.reject(
            decision.session_id, decision.proposal_id, self.agent_id, decision.reason
        )

    async def _delegate(self, decision: Delegate) -> str:
        protocol = self._require(self.delegation_protocol, "delegation protocol", decision)
        return str(await protocol.delegate(self.agent_id, decision.delegatee_id, decision.scope))

    async def _revoke(self, decision: RevokeDelegation) -> bool:
        protocol = self._require(self.delegation_protocol, "delegation protocol", decision)
        return bool(await protocol.revoke(decision.delegation_id))

    async def _invoke_tool(self, decision: InvokeTool) -> Any:
        registry = self._require(self.tool_registry, "tool registry", decision)
        denied = getattr(self.action_policy, "denied", None)
        if denied is not None and normalize_action(decision.tool_name) in denied:
            raise PolicyError(f"the action policy denies tool {decision.tool_name!r}")
        if self.tool_allowlist is not None and decision.tool_name not in self.tool_allowlist:
            raise PolicyError(
                f"tool {decision.tool_name!r} is not in the allowlist {sorted(self.tool_allowlist)}"
            )
        # Past tool_timeout_sec the call is cut off and the next decisions run at once.
        return await registry.invoke(
            decision.tool_name, dict(decision.params), timeout_sec=self.tool_timeout_sec
        )


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return repr(value)
