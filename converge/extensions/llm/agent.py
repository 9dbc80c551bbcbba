"""An agent whose ``decide`` asks a language model for its decisions."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from converge.core.agent import Agent, DecideResult
from converge.core.capability import Capability, CapabilitySet
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
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task
from converge.core.topic import Topic
from converge.errors import ConfigError, ConvergeError, DecodeError

__all__ = ["DEFAULT_SYSTEM_PROMPT", "LLMAgent", "extract_json", "parse_decisions"]

logger = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = """\
You are an autonomous agent in a multi-agent system. You receive the messages sent to
you and the tasks you may work on, and you answer with a JSON array of decisions.

Decision objects (the "type" field selects the kind):
- {"type": "send_message",
   "message": {"recipient": "<agent id or null>", "topics": [], "payload": {...}}}
- {"type": "claim_task", "task_id": "<task id>"}
- {"type": "report_task", "task_id": "<task id>", "result": <any JSON>}
- {"type": "submit_task", "task": {"objective": "<text or object>", "inputs": {...}}}
- {"type": "join_pool", "pool_id": "<pool id>"} / {"type": "leave_pool", "pool_id": "<pool id>"}
- {"type": "create_pool", "spec": {"id": "<pool id>", "topics": []}}
- {"type": "submit_bid", "auction_id": "<id>", "amount": <number>, "content": <any JSON>}
- {"type": "vote", "vote_id": "<id>", "option": <any JSON>}
- {"type": "propose", "session_id": "<id>", "proposal_content": <any JSON>}
- {"type": "accept_proposal", "session_id": "<id>", "proposal_id": "<id>"}
- {"type": "reject_proposal", "session_id": "<id>", "proposal_id": "<id>", "reason": "<text>"}
- {"type": "delegate", "delegatee_id": "<agent id>", "scope": [...]}
- {"type": "revoke_delegation", "delegation_id": "<id>"}
- {"type": "invoke_tool", "tool_name": "<name>", "params": {...}}

Answer with ONLY the JSON array, no other text. With nothing to do, answer [].
"""

_DECISIONS: dict[str, type[Decision]] = {
    cls.type: cls
    for cls in (
        SendMessage,
        JoinPool,
        LeavePool,
        CreatePool,
        SubmitTask,
        ClaimTask,
        ReportTask,
        SubmitBid,
        Vote,
        Propose,
        AcceptProposal,
        RejectProposal,
        Delegate,
        RevokeDelegation,
        InvokeTool,
    )
}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)\n?```", re.DOTALL)
_TASK_KEYS = (
    "id",
    "objective",
    "inputs",
    "required_capabilities",
    "constraints",
    "pool_id",
    "topic",
    "evaluator",
)


def _canonical(name: str) -> str:
    return _CAMEL.sub("_", name.strip()).replace("-", "_").lower()


def extract_json(text: str) -> str:
    """Return the JSON part of a model reply.

    That is the first fenced code block, else the first balanced ``[...]`` or
    ``{...}``. An empty reply gives ``"[]"``; a reply with no JSON is returned stripped.
    """
    text = text.strip()
    if not text:
        return "[]"
    fence = _FENCE.search(text)
    if fence:
        return fence.group(1).strip()
    starts = [i for i in (text.find("["), text.find("{")) if i != -1]
    if not starts:
        return text
    start = min(starts)
    opener = text[start]
    closer = "]" if opener == "[" else "}"
    depth = 0
    in_string = False
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == opener:
            depth += 1
        elif ch == closer:
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:]


def _message(raw: object, sender: str) -> Message:
    if not isinstance(raw, Mapping):
        raise DecodeError(f"send_message needs a message object, got {type(raw).__name__}")
    return Message(
        sender=sender,
        recipient=raw.get("recipient"),
        topics=raw.get("topics") or (),
        payload=raw.get("payload") or {},
        task_id=raw.get("task_id"),
    )


def _task(raw: object) -> Task:
    if not isinstance(raw, Mapping):
        raise DecodeError(f"submit_task needs a task object, got {type(raw).__name__}")
    kwargs = {k: raw[k] for k in _TASK_KEYS if raw.get(k) is not None}
    if "objective" not in kwargs:
        raise DecodeError("submit_task needs task.objective")
    return Task(**kwargs)


def _decision(item: Mapping[str, Any], sender: str) -> Decision:
    kind = item.get("type")
    if not isinstance(kind, str):
        raise DecodeError(f"decision needs a string 'type', got {kind!r}")
    cls = _DECISIONS.get(_canonical(kind))
    if cls is None:
        raise DecodeError(f"unknown decision type {kind!r}; known: {sorted(_DECISIONS)}")
    if cls is SendMessage:
        raw = item.get("message")
        if raw is None:  # flat form: the message fields on the decision itself
            raw = {k: v for k, v in item.items() if k != "type"}
        return SendMessage(_message(raw, sender))
    if cls is SubmitTask:
        return SubmitTask(_task(item.get("task")))
    names: set[str] = (
        {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    )
    kwargs = {k: v for k, v in item.items() if k in names}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise DecodeError(f"{cls.type}: {exc}") from exc


def parse_decisions(reply: str, *, sender: str) -> list[Decision]:
    """Return the decisions in a model ``reply``; items that do not parse are logged and skipped.

    Accepts a JSON array, ``{"decisions": [...]}`` or a single decision object,
    bare or in a fenced code block. Type names match in any case style
    (``"ClaimTask"``, ``"claim_task"``). Messages are sent as ``sender``. Raises
    ``DecodeError`` when the reply holds no JSON decisions at all.
    """
    try:
        data = orjson.loads(extract_json(reply))
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"model reply is not JSON: {reply[:200]!r}") from exc
    if isinstance(data, dict):
        data = data.get("decisions", [data])
    if not isinstance(data, list):
        raise DecodeError(
            f"model reply must be a JSON array of decisions, got {type(data).__name__}"
        )
    decisions: list[Decision] = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            logger.warning("skipping decision %d: not an object: %.200r", index, item)
            continue
        try:
            decisions.append(_decision(item, sender))
        except (DecodeError, ValueError) as exc:
            logger.warning("skipping decision %d: %s", index, exc)
    return decisions


def _message_view(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "sender": message.sender,
        "recipient": message.recipient,
        "topics": [t.to_dict() for t in message.topics],
        "payload": jsonable(message.payload),
        "task_id": message.task_id,
    }


def _task_view(task: Task) -> dict[str, Any]:
    data = task.to_dict()
    keep = ("id", "objective", "inputs", "state", "pool_id", "required_capabilities", "constraints")
    view: dict[str, Any] = jsonable({k: data[k] for k in keep if k in data})
    return view


class LLMAgent(Agent):
    """An agent that asks ``provider`` what to do each tick.

    ``adecide`` (async; ``decide`` returns it inside an event loop and runs it from
    synchronous code) sends ``system_prompt`` and a prompt listing the messages
    and tasks (as JSON) to ``provider.complete``, and turns the reply's JSON array
    into decisions. A provider error, a timeout (``timeout_sec``) or a reply
    without JSON is logged, passed to ``on_decide_error`` when given, and gives no
    decisions; malformed items are skipped. ``provider`` is an
    :class:`~converge.extensions.llm.base.LLMProvider`; objects with an async
    ``achat(messages)`` or a sync ``chat(messages)`` work too (a sync ``chat`` runs
    in a worker thread through ``asyncio.to_thread`` so it cannot block the loop).
    ``options`` are passed to every provider call.
    """

    def __init__(
        self,
        identity: Identity,
        provider: object,
        *,
        system_prompt: str | None = None,
        topics: Iterable[Topic | dict[str, Any] | str] | None = None,
        capabilities: Iterable[str | Capability] | CapabilitySet | None = None,
        timeout_sec: float = 120.0,
        on_decide_error: Callable[[BaseException | str], None] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(identity, topics=topics, capabilities=capabilities)
        if not any(callable(getattr(provider, m, None)) for m in ("complete", "achat", "chat")):
            raise ConfigError(
                f"provider {type(provider).__name__} has no complete(), achat() or chat() method"
            )
        if timeout_sec <= 0:
            raise ConfigError(f"LLMAgent.timeout_sec must be > 0, got {timeout_sec!r}")
        self.provider = provider
        self.system_prompt = system_prompt or DEFAULT_SYSTEM_PROMPT
        self.timeout_sec = timeout_sec
        self.on_decide_error = on_decide_error
        self.options = dict(options or {})

    def build_prompt(self, messages: Sequence[Message], tasks: Sequence[Task]) -> str:
        """Return the user prompt for one tick: the agent id, messages and tasks as JSON."""
        lines = [f"Your agent id: {self.id}"]
        if self.capabilities:
            lines.append(f"Your capabilities: {', '.join(self.capabilities)}")
        if not messages and not tasks:
            lines.append("No messages or tasks. Output [].")
            return "\n".join(lines)
        if messages:
            views = [_message_view(m) for m in messages]
            lines.append("Messages: " + orjson.dumps(views, default=str).decode())
        if tasks:
            views = [_task_view(t) for t in tasks]
            lines.append("Tasks: " + orjson.dumps(views, default=str).decode())
        lines.append("Answer with a JSON array of decisions.")
        return "\n".join(lines)

    async def _ask(self, prompt: str) -> str:
        provider: Any = self.provider
        complete = getattr(provider, "complete", None)
        if callable(complete):
            reply = await complete(prompt, system=self.system_prompt, **self.options)
        else:
            chat = [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": prompt},
            ]
            achat = getattr(provider, "achat", None)
            if inspect.iscoroutinefunction(achat):
                reply = await achat(chat, **self.options)
            else:
                reply = await asyncio.to_thread(provider.chat, chat, **self.options)
        if not isinstance(reply, str):
            raise DecodeError(f"provider returned {type(reply).__name__}, not text")
        return reply

    def _report(self, error: BaseException | str) -> None:
        if self.on_decide_error is not None:
            try:
                self.on_decide_error(error)
            except Exception:
                logger.exception("on_decide_error callback of agent %s failed", self.id)

    def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> DecideResult:
        """Ask the provider and return its decisions (``[]`` on any failure, logged).

        Inside a running event loop (the runtime, async code) this returns the
        :meth:`adecide` coroutine to await; called from plain synchronous code, as in
        the seed design, it runs that coroutine to completion and returns the list.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.adecide(messages, tasks))
        return self.adecide(messages, tasks)

    async def adecide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        """Ask the provider and return its decisions (``[]`` on any failure, logged)."""
        prompt = self.build_prompt(messages, tasks)
        try:
            async with asyncio.timeout(self.timeout_sec):
                reply = await self._ask(prompt)
        except TimeoutError as exc:
            logger.warning(
                "agent %s: provider gave no answer within %s s",
                self.id,
                self.timeout_sec,
                extra={"agent_id": self.id},
            )
            self._report(exc)
            return []
        except Exception as exc:
            logger.warning(
                "agent %s: provider failed: %s", self.id, exc, extra={"agent_id": self.id}
            )
            self._report(exc)
            return []
        try:
            return parse_decisions(reply, sender=self.id)
        except ConvergeError as exc:
            logger.warning("agent %s: %s", self.id, exc, extra={"agent_id": self.id})
            self._report(exc)
            return []
