"""Seed-design usage of converge.core: identity, message, topic, capability, store, tools, agent."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from converge.core.agent import Agent
from converge.core.capability import Capability, CapabilitySet
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.store import Store
from converge.core.tools import ToolRegistry
from converge.core.topic import Topic
from converge.extensions.storage.file import FileStore
from converge.extensions.storage.memory import MemoryStore


def test_identity_fields_and_verify_only_form() -> None:
    full = Identity.generate()
    assert full.public_key and full.private_key and full.fingerprint
    verify_only = Identity.from_public_key(full.public_key)
    assert verify_only.private_key is None
    assert verify_only.fingerprint == full.fingerprint
    assert str(full).startswith("Identity")
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.fingerprint = "new"  # type: ignore[misc]


def test_message_sign_verify_and_keyword_constructor() -> None:
    sender, other = Identity.generate(), Identity.generate()
    topic = Topic(namespace="test", attributes={"type": "ping"})
    signed = Message(sender=sender.fingerprint, topics=[topic], payload={"c": "hi"}).sign(sender)
    assert signed.signature
    assert signed.verify(sender.public_key)
    assert not signed.verify(other.public_key)
    public_only = Identity(
        public_key=sender.public_key, private_key=None, fingerprint=sender.fingerprint
    )
    with pytest.raises(ValueError, match="private key"):
        Message(sender="x").sign(public_only)
    assert not Message(sender="x").verify(sender.public_key)  # unsigned


def test_message_bytes_and_invalid_input_is_a_value_error() -> None:
    msg = Message(sender="s1", payload={"x": 1})
    restored = Message.from_bytes(msg.to_bytes())
    assert (restored.sender, restored.payload) == ("s1", {"x": 1})
    with pytest.raises(ValueError, match="Invalid"):
        Message.from_bytes(msgpack.packb([1, 2, 3]))


def test_message_payload_encryption_round_trip() -> None:
    key = b"0" * 32
    encrypted = Message(sender="s1", payload={"secret": "data"}).encrypt_payload(key)
    assert "_encrypted" in encrypted.payload
    assert encrypted.decrypt_payload(key).payload == {"secret": "data"}
    plain = Message(sender="s1", payload={"plain": 1})
    assert plain.decrypt_payload(key) is plain


def test_message_signature_is_canonical_and_matches_the_seed_vector() -> None:
    private_key = bytes.fromhex("1f" * 32)
    public_key = ed25519.Ed25519PrivateKey.from_private_bytes(private_key).public_key()
    raw = public_key.public_bytes_raw()
    base = Identity.from_public_key(raw)
    identity = Identity(public_key=raw, private_key=private_key, fingerprint=base.fingerprint)
    msg = Message(
        id="msg-fixed-001",
        sender=identity.fingerprint,
        payload={"b": 2, "a": {"z": 1, "y": 2}},
        timestamp=1700000000000,
    ).sign(identity)
    assert msg.signature is not None
    assert msg.signature.hex() == (
        "c68853863eac5d9371772d11d12d4356bb341d97934858e4667d76b3dc8f7169"
        "5c44cb20a55a757bad792d36885ee41f67391c9e733fd0d498de788126f37e08"
    )
    reordered = dataclasses.replace(msg, payload={"a": {"y": 2, "z": 1}, "b": 2}, signature=None)
    assert reordered.sign(identity).signature == msg.signature


def test_topic_round_trip_and_text_form() -> None:
    topic = Topic(namespace="ns", attributes={"a": 1, "b": 2}, version="2.0")
    data = topic.to_dict()
    assert data == {"namespace": "ns", "attributes": {"a": 1, "b": 2}, "version": "2.0"}
    again = Topic.from_dict(data)
    assert again.attributes == topic.attributes and str(again) == str(topic)
    text = str(Topic("ns", {"a": 1}))
    assert "ns" in text and "a=1" in text


def test_capability_positional_form_and_set() -> None:
    cap = Capability("compute", "1.0", "compute capability")
    caps = CapabilitySet([cap])
    assert "Capability" in repr(cap) and "CapabilitySet" in repr(caps)
    caps.add(Capability("analyze", "1.0", "analyze"))
    assert caps.has("compute") and caps.has("analyze") and not caps.has("other")
    plain = Capability(name="test", version="1.0", description="test cap")
    assert plain.constraints == {} and plain.costs == {}


def test_store_subclass_needs_only_the_four_basic_methods() -> None:
    class DictStore(Store):
        def __init__(self) -> None:
            self.data: dict[str, Any] = {}

        def put(self, key: str, value: object) -> None:
            self.data[key] = value

        def get(self, key: str) -> Any:
            return self.data.get(key)

        def delete(self, key: str) -> None:
            self.data.pop(key, None)

        def list(self, prefix: str = "") -> list[str]:
            return sorted(k for k in self.data if k.startswith(prefix))

    store = DictStore()
    assert store.put_if_absent("k", "v1") is True
    assert store.put_if_absent("k", "v2") is False
    assert store.get("k") == "v1"
    assert DictStore.atomic_put_if_absent is False


def test_store_capability_flags(tmp_path: Path) -> None:
    assert Store.atomic_put_if_absent is False
    assert Store.supports_locking is False
    assert MemoryStore.atomic_put_if_absent is True
    assert MemoryStore.supports_locking is False
    assert FileStore(tmp_path).atomic_put_if_absent is True


def test_memory_store_seed_usage() -> None:
    store = MemoryStore()
    store.put("key1", "value1")
    store.put("key2", "value2")
    assert store.get("key1") == "value1" and store.get("missing") is None
    assert {"key1", "key2"} <= set(store.list())
    store.delete("key1")
    store.delete("nonexistent")
    assert store.get("key1") is None and "key2" in store.list(prefix="key")
    assert store.put_if_absent("k", "v1") is True and store.put_if_absent("k", "v2") is False


class _Echo:
    @property
    def name(self) -> str:
        return "echo"

    def run(self, params: dict[str, Any]) -> str:
        return str(params.get("text", ""))


def test_tool_registry_seed_usage() -> None:
    registry = ToolRegistry()
    tool = _Echo()
    registry.register(tool)
    assert registry.get("echo") is tool and registry.get("missing") is None
    assert set(registry.list_names()) == {"echo"}
    assert tool.run({"text": "hello"}) == "hello"


def test_agent_default_decide_and_sign_message() -> None:
    identity = Identity.generate()
    agent = Agent(identity)
    assert agent.decide([], []) == []
    signed = agent.sign_message(Message(sender=identity.fingerprint))
    assert signed.signature


def test_message_payload_may_be_any_plain_value() -> None:
    identity = Identity.generate()
    for payload in ("tick", 3, [1, "a"], None):
        msg = Message(sender=identity.fingerprint, payload=payload).sign(identity)
        again = Message.from_bytes(msg.to_bytes())
        assert again.payload == payload and again.verify(identity.public_key)
        assert Message.from_dict(msg.to_dict()).payload == payload
    key = b"1" * 32
    sealed = Message(sender="s1", payload="secret").encrypt_payload(key)
    assert sealed.is_encrypted and sealed.decrypt_payload(key).payload == "secret"
    with pytest.raises(ValueError, match="Message.payload"):
        Message(sender="s1", payload={"obj": object()})
