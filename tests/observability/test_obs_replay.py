"""ReplayLog: record, export/load JSON lines, bad files, replay."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from converge.core.identity import Identity
from converge.core.message import Message
from converge.errors import ConfigError, DecodeError
from converge.observability.replay import ReplayLog, ReplayRunner


def test_record_export_load_round_trip(tmp_path: Path) -> None:
    identity = Identity.generate()
    signed = Message(sender="x", payload={"n": 1, "blob": b"\x00\xff"}).sign(identity)
    encrypted = Message(sender="a", payload={"secret": 1}).encrypt_payload(b"k" * 32)
    log = ReplayLog()
    log.record_inbound(signed, agent_id="a1", transport="LocalTransport")
    log.record_outbound(encrypted, agent_id="a1")
    log.record_message(signed)
    assert [e["direction"] for e in log.events] == ["inbound", "outbound", "outbound"]
    path = tmp_path / "replay.jsonl"
    assert log.export(path) == 3
    assert len(path.read_text().splitlines()) == 3
    loaded = ReplayLog.from_file(path)
    assert len(loaded) == 3
    assert loaded.events[0]["data"]["id"] == signed.id
    first = loaded.messages()[0]
    assert first == signed
    assert first.verify(identity)
    assert loaded.messages(direction="outbound")[0].decrypt_payload(b"k" * 32).payload == {
        "secret": 1
    }


def test_bare_message_lines_are_accepted(tmp_path: Path) -> None:
    message = Message(sender="a", payload={"x": 1})
    path = tmp_path / "bare.jsonl"
    path.write_bytes(orjson.dumps(message.to_dict()) + b"\n\n")
    log = ReplayLog()
    assert log.load(path) == 1
    assert log.messages() == [message]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"type": "message", "data": {"sender": 5}}', "invalid message record"),
        (b'{"type": "message", "data": {"sender": "a"}}', "invalid message record"),
        (b'{"type": "message", "direction": "sideways", "data": {}}', "direction"),
        (b'{"data": {"sender": "a", "signature": {"$bytes": "!!"}}}', "base64"),
    ],
)
def test_bad_lines_name_the_line_number(tmp_path: Path, line: bytes, match: str) -> None:
    good = orjson.dumps(Message(sender="a").to_dict())
    path = tmp_path / "bad.jsonl"
    path.write_bytes(good + b"\n" + line + b"\n")
    log = ReplayLog()
    log.record_message(Message(sender="kept"))
    with pytest.raises(DecodeError, match=rf"bad\.jsonl:2: .*{match}"):
        log.load(path)
    assert [m.sender for m in log.messages()] == ["kept"]  # nothing replaced


def test_missing_file_is_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ReplayLog().load(tmp_path / "nope.jsonl")


def test_bad_records_and_config() -> None:
    with pytest.raises(DecodeError, match="Message objects"):
        ReplayLog().record_message({"sender": "a"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="direction"):
        ReplayLog().record_message(Message(sender="a"), direction="up")
    with pytest.raises(ConfigError, match="max_events"):
        ReplayLog(max_events=0)


def test_bounded_log_drops_oldest() -> None:
    log = ReplayLog(max_events=2)
    for i in range(3):
        log.record_message(Message(sender=f"s{i}"))
    assert [m.sender for m in log.messages()] == ["s1", "s2"]


@pytest.mark.asyncio
async def test_runner_filters_sorts_and_delivers() -> None:
    log = ReplayLog()
    later = Message(sender="a1", payload={"x": 2}, timestamp=2000)
    earlier = Message(sender="a1", payload={"x": 1}, timestamp=1000)
    other = Message(sender="a2", timestamp=1500)
    log.record_outbound(later, agent_id="a1")
    log.record_outbound(earlier, agent_id="a1")
    log.record_inbound(other, agent_id="a2")
    log.events.append({"type": "custom", "timestamp": 1, "data": {}})
    runner = ReplayRunner(log)
    dry = await runner.replay(direction="inbound", dry_run=True)
    assert [e["data"]["id"] for e in dry] == [other.id]
    seen: list[str] = []

    async def callback(message: Message) -> None:
        seen.append(message.id)

    events = await runner.replay(callback=callback, agent_id="a1", start_ts=500, end_ts=2000)
    assert [e["data"]["id"] for e in events] == [earlier.id, later.id]
    assert seen == [earlier.id, later.id]
