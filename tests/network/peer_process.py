"""A peer process for the multi-process transport tests (run as a script, not collected).

``python peer_process.py receive <backend> <json config>``: start a transport as
agent ``rx``, print ``{"ready": ..., "port": ...}``, then ``receive_verified`` until a
message with payload ``{"last": true}`` arrives; print the valid payloads and the
transport's counters as one JSON line and exit.

``python peer_process.py send <backend> <json config>``: start a transport as the
agent of ``private_key`` and send, to ``rx``: valid, forged, valid, a replay of the
first message, one from an unknown agent, valid, last. Print ``{"sent": n}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from converge.core.identity import Identity
from converge.core.message import Message
from converge.network.identity_registry import IdentityRegistry
from converge.network.transport.base import Transport
from converge.network.transport.nats import NatsTransport
from converge.network.transport.tcp import TcpTransport

TIMEOUT_SEC = 20.0


def _emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def _transport(backend: str, agent_id: str, config: dict[str, Any]) -> Transport:
    if backend == "tcp":
        peers = {"rx": ("127.0.0.1", config["port"])} if "port" in config else {}
        return TcpTransport("127.0.0.1", 0, agent_id, peers=peers)
    return NatsTransport(agent_id, config["nats_url"], namespace=config["namespace"])


async def receive(backend: str, config: dict[str, Any]) -> None:
    registry = IdentityRegistry()
    registry.register(config["sender_id"], bytes.fromhex(config["sender_public_key"]))
    async with _transport(backend, "rx", config) as transport:
        port = transport.port if isinstance(transport, TcpTransport) else None
        _emit({"ready": True, "port": port})
        payloads: list[dict[str, Any]] = []
        while True:
            message = await transport.receive_verified(registry, TIMEOUT_SEC)
            payloads.append(message.payload)
            if message.payload.get("last"):
                break
        _emit({"payloads": payloads, "stats": transport.stats.as_dict()})


async def send(backend: str, config: dict[str, Any]) -> None:
    me = Identity.from_private_key(bytes.fromhex(config["private_key"]))
    mallory, stranger = Identity.generate(), Identity.generate()
    async with _transport(backend, me.fingerprint, config) as transport:
        first = Message(me.fingerprint, recipient="rx", payload={"n": 1}).sign(me)
        forged = Message(me.fingerprint, recipient="rx", payload={"n": -1}).sign(mallory)
        forged = Message.from_dict({**forged.to_dict(), "sender": me.fingerprint})
        unknown = Message(stranger.fingerprint, recipient="rx", payload={"n": -2}).sign(stranger)
        sequence = [
            first,
            forged,
            Message(me.fingerprint, recipient="rx", payload={"n": 2}).sign(me),
            first,  # replayed, byte for byte
            unknown,
            Message(me.fingerprint, recipient="rx", payload={"n": 3}).sign(me),
            Message(me.fingerprint, recipient="rx", payload={"last": True}).sign(me),
        ]
        for message in sequence:
            await transport.send(message)
        _emit({"sent": len(sequence)})


def main() -> None:
    role, backend, raw = sys.argv[1], sys.argv[2], sys.argv[3]
    config = json.loads(raw)
    asyncio.run(receive(backend, config) if role == "receive" else send(backend, config))


if __name__ == "__main__":
    main()
