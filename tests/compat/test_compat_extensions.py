"""Seed-design usage of observability and extensions: metrics, replay, logging, tracing,
crypto, file store and the LLM agent."""

from __future__ import annotations

import json
import logging
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from converge.core.decisions import ClaimTask, CreatePool, JoinPool, SendMessage
from converge.core.identity import Identity
from converge.core.message import Message
from converge.extensions.crypto import decrypt, derive_key, encrypt, secure_random_bytes
from converge.extensions.llm import LLMAgent
from converge.extensions.storage.file import FileStore
from converge.observability.logging import JsonFormatter, configure_logging, get_logger, log_struct
from converge.observability.metrics import MetricsCollector
from converge.observability.replay import ReplayLog
from converge.observability.tracing import get_current_trace_id, register_span_exporter, trace


def test_metrics_snapshot_and_prometheus_text() -> None:
    mc = MetricsCollector()
    mc.inc("requests")
    mc.inc("requests", 2)
    mc.gauge("latency", 0.5)
    snap = mc.snapshot()
    assert snap["counters"]["requests"] == 3 and snap["gauges"]["latency"] == 0.5
    mc.gauge("queue_size", 5.0)
    out = mc.format_prometheus()
    assert "requests" in out and "counter" in out and "gauge" in out
    assert " 3\n" in out and " 5.0\n" in out


def test_replay_log_record_export_load(tmp_path: Path) -> None:
    log = ReplayLog()
    msg = Message(sender="a1", payload={"test": 1})
    log.record_inbound(msg, agent_id="a1", transport="LocalTransport")
    log.record_outbound(msg, agent_id="a1", transport="LocalTransport")
    log.record_message(msg)
    assert (log.events[0]["direction"], log.events[1]["direction"]) == ("inbound", "outbound")
    path = tmp_path / "replay.json"
    log.export(str(path))
    again = ReplayLog()
    again.load(str(path))
    assert len(again.events) == 3 and again.events[0]["data"]["id"] == msg.id


def test_json_logging_and_configure() -> None:
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = get_logger("compat_json_logger")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log_struct(logger, logging.INFO, "test message", user="alice", action="login")
        record = json.loads(stream.getvalue())
        assert record["message"] == "test message"
        assert (record["user"], record["action"]) == ("alice", "login")
        assert "timestamp" in record
    finally:
        logger.removeHandler(handler)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(json_format=False)
        configure_logging(json_format=True)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_trace_context_and_span_exporter() -> None:
    assert get_current_trace_id() is None
    with trace("op1") as span:
        trace_id = span.trace_id
        assert get_current_trace_id() == trace_id
        with trace("op2") as inner:
            assert inner.trace_id == trace_id
    assert get_current_trace_id() is None
    exported: list[tuple[str, float]] = []

    class Capturing:
        def export(self, span: Any, duration_sec: float) -> None:
            exported.append((span.name, duration_sec))

    register_span_exporter(Capturing())
    try:
        with trace("test_op") as span:
            assert span.name == "test_op"
    finally:
        register_span_exporter(None)
    assert len(exported) == 1 and exported[0][0] == "test_op" and exported[0][1] >= 0


def test_crypto_seed_calls() -> None:
    key = secure_random_bytes(32)
    assert decrypt(encrypt(b"secret data", key), key) == b"secret data"
    sealed = encrypt(b"data", key, associated_data=b"associated")
    assert decrypt(sealed, key, associated_data=b"associated") == b"data"
    with pytest.raises(Exception, match="decryption failed"):
        decrypt(encrypt(b"x", key), secure_random_bytes(32))
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt(b"x", b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        decrypt(encrypt(b"x", key), b"short")
    with pytest.raises(ValueError, match="Ciphertext too short"):
        decrypt(b"x" * 10, key)
    salt = secure_random_bytes(16)
    assert derive_key("password", salt) == derive_key("password", salt)
    assert derive_key("pw1", salt) != derive_key("pw2", salt)
    assert derive_key("pw", b"a" * 16) != derive_key("pw", b"b" * 16)
    assert len(derive_key("pw", salt, length=64)) == 64
    assert len(secure_random_bytes(32)) == 32


def test_file_store_seed_calls(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path))
    store.put("obj1", {"a": 1, "b": 2})
    assert FileStore(str(tmp_path)).get("obj1") == {"a": 1, "b": 2}
    store.put("obj2", "test")
    assert {"obj1", "obj2"} <= set(store.list())
    store.delete("obj1")
    store.delete("none")
    assert store.get("obj1") is None
    assert FileStore(str(tmp_path / "does_not_exist")).list("prefix") == []
    store.put("a1", 1)
    store.put("a2", 2)
    assert set(store.list("a")) == {"a1", "a2"} and store.list("c") == []
    assert store.put_if_absent("key1", "a") is True
    assert store.put_if_absent("key1", "b") is False and store.get("key1") == "a"


class ScriptedChat:
    """A provider with only a synchronous chat(messages), as the seed's tests use."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.calls: list[list[dict[str, str]]] = []

    def chat(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        self.calls.append(messages)
        return self.reply


def test_llm_agent_decide_is_synchronous_outside_an_event_loop() -> None:
    identity = Identity.generate()
    reply = json.dumps(
        [
            {"type": "SendMessage", "message": {"sender": identity.fingerprint, "payload": {}}},
            {"type": "JoinPool", "pool_id": "p1"},
            {"type": "ClaimTask", "task_id": "t1"},
            {"type": "CreatePool", "spec": {"id": "new-pool", "topics": []}},
        ]
    )
    provider = ScriptedChat(reply)
    decisions = LLMAgent(identity, provider=provider, system_prompt="Custom prompt").decide([], [])
    assert isinstance(decisions, list)
    assert [type(d) for d in decisions] == [SendMessage, JoinPool, ClaimTask, CreatePool]
    assert any("Custom prompt" in m["content"] for m in provider.calls[0])
    assert any("No messages or tasks" in m["content"] for m in provider.calls[0])
    assert LLMAgent(identity, provider=ScriptedChat("not valid json")).decide([], []) == []


@pytest.mark.asyncio
async def test_llm_agent_decide_is_awaitable_inside_an_event_loop() -> None:
    identity = Identity.generate()
    agent = LLMAgent(identity, provider=ScriptedChat('[{"type": "ClaimTask", "task_id": "x"}]'))
    assert await agent.adecide([], []) == [ClaimTask("x")]
    pending = agent.decide([], [])
    assert not isinstance(pending, list)
    assert await pending == [ClaimTask("x")]  # type: ignore[misc]
