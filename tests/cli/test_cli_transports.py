"""``converge run`` over the point-to-point transports (tcp, websocket).

``local`` and ``nats`` runs are in ``test_cli.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest
from typer.testing import CliRunner

from converge._cli.agents import make_transports as _transports
from converge.cli import app
from converge.config import load_config
from converge.core.message import Message

runner = CliRunner()

RECEIVE_TIMEOUT_SEC = 10.0


@pytest.mark.nats
@pytest.mark.parametrize("transport", ["tcp", "websocket"])
def test_run_over_each_transport(nats_url: str, namespace: str, transport: str) -> None:
    result = runner.invoke(
        app,
        [
            *("run", "--url", nats_url, "--namespace", namespace, "--transport", transport),
            *("-n", "2", "-t", "4", "-d", "60", "-q"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.output.strip().splitlines()[-1])
    assert summary["tasks"] == 4 and summary["states"] == {"completed": 4}


@dataclass
class Named:
    id: str


@pytest.mark.parametrize("transport", ["tcp", "websocket"])
@pytest.mark.asyncio
async def test_point_to_point_transports_know_each_other(transport: str) -> None:
    cfg = load_config(env={}, transport=transport)
    agents = [Named("a"), Named("b"), Named("c")]
    transports = await _transports(cfg, "nats://unused:4222", agents)
    try:
        assert [t.agent_id for t in transports] == ["a", "b", "c"]
        assert all(t.is_running for t in transports)
        for sender in transports:
            for receiver in transports:
                if receiver is sender:
                    continue
                sent = Message(sender.agent_id, recipient=receiver.agent_id, payload={"x": 1})
                await sender.send(sent)
                got = await receiver.receive(RECEIVE_TIMEOUT_SEC)
                assert (got.id, got.sender) == (sent.id, sender.agent_id)
    finally:
        for t in transports:
            await t.stop()


def test_config_accepts_the_point_to_point_transports() -> None:
    assert load_config(env={}, transport="tcp").transport == "tcp"
    assert load_config(env={"CONVERGE_TRANSPORT": "websocket"}).transport == "websocket"
