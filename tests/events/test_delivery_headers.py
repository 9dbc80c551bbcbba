"""Delivery header blocks parse exactly as nats-py parses them, also from the lines and
names kept from earlier blocks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from events.jetstream import rawroute
from events.jetstream.rawroute import parse_delivery_headers


def _nats_py(block: bytes) -> list[tuple[str, str]] | None:
    """nats-py's headers of ``block``, as items: the order of the keys counts too."""
    found = Client._parse_header_lines(block[10:])
    return list(found.items()) if found else None


def _parsed(block: bytes) -> list[tuple[str, str]] | None:
    found = parse_delivery_headers(block)
    return None if found is None else list(found.items())


_names = st.sampled_from(
    ["Converge-Event-Type", "Converge-Event-Version", "Content-Type", "traceparent", "Nats-Msg-Id"]
) | st.text(st.characters(min_codepoint=0, max_codepoint=0x3FF), max_size=12)
_values = st.text(st.characters(min_codepoint=0, max_codepoint=0x3FF), max_size=20)
_ids = st.text("abcdef0123456789", min_size=1, max_size=32) | st.text(max_size=8)


@st.composite
def blocks(draw: st.DrawFn) -> bytes:
    lines = [f"Nats-Msg-Id: {draw(_ids)}"] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 5))):
        gap = draw(st.sampled_from([" ", "", "  ", "\t"]))
        lines.append(f"{draw(_names)}:{gap}{draw(_values)}")
    text = "NATS/1.0\r\n" + "".join(line + "\r\n" for line in lines) + "\r\n"
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=400, deadline=None)
@given(blocks())
def test_blocks_parse_like_nats_py(block: bytes) -> None:
    assert _parsed(block) == _nats_py(block)
    assert _parsed(block) == _nats_py(block)  # again, from the kept part


_pool_lines = st.sampled_from(
    [
        "Converge-Event-Type: task.claimed",
        "Converge-Event-Type:task.reported",
        " Converge-Event-Type : task.claimed ",
        "Converge-Event-Version: 1",
        "Converge-Actor: agent-1",
        "Converge-Actor:\tagent-2\t",
        "Content-Type: application/json",
        "Nats-Expected-Last-Subject-Sequence: 7",
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "Bad Name: x",
        "Converge-Actor",
        "Ünicode: x",
        "Value: \u00e9t\u00e9",
        " Nats-Msg-Id : other",
        "",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_pool_lines | st.builds(lambda n, v: f"{n}:{v}", _names, _values))))
def test_blocks_of_recurring_lines_parse_like_nats_py(blocks_lines: list[list[str]]) -> None:
    """Lines and names kept from one block give the same result in the next."""
    for k, lines in enumerate(blocks_lines):
        head = f"NATS/1.0\r\nNats-Msg-Id: id{k % 2}\r\n" if k % 3 else "NATS/1.0\r\n"
        text = head + "".join(line + "\r\n" for line in lines) + "\r\n"
        block = text.encode("utf-8", "surrogatepass")
        assert _parsed(block) == _nats_py(block)


@pytest.mark.parametrize(
    "block",
    [
        b"NATS/1.0\r\nNats-Msg-Id: abc123\r\n\r\n",
        b"NATS/1.0\r\nNats-Msg-Id: abc123\r\nNats-Msg-Id: other\r\n\r\n",
        b"NATS/1.0\r\nNats-Msg-Id: abc 123\r\nA: 1\r\n\r\n",
        b"NATS/1.0\r\nNats-Msg-Id: \r\nA: 1\r\n\r\n",
        b"NATS/1.0\r\nNats-Msg-Id: ab\xffc\r\nA: 1\r\n\r\n",
        b"NATS/1.0\r\nNats-Msg-Id: abc\r\nBroken: \xff\xfe\r\nbad key: x\r\n\r\n",
        b"NATS/1.0\r\nNats-Msg-Id: abc",
    ],
)
def test_blocks_led_by_a_message_id_parse_like_nats_py(block: bytes) -> None:
    assert _parsed(block) == _nats_py(block)
    assert _parsed(block) == _nats_py(block)


def test_the_kept_lines_and_names_stay_bounded() -> None:
    for i in range(rawroute._LINE_CACHE_SIZE * 2):
        block = (
            f"NATS/1.0\r\nNats-Msg-Id: id{i}\r\nX-{i % 300}: {i}\r\ntraceparent: 00-{i:032x}-01"
            "\r\n\r\n"
        ).encode()
        assert _parsed(block) == _nats_py(block)
    assert len(rawroute._lines) <= rawroute._LINE_CACHE_SIZE
    assert len(rawroute._names) <= rawroute._NAME_CACHE_SIZE
