"""Delivery header blocks parse exactly as nats-py parses them, also on the path that
keeps the part of a block after its ``Nats-Msg-Id`` line."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from events.jetstream import rawroute
from events.jetstream.rawroute import parse_delivery_headers


def _nats_py(block: bytes) -> dict[str, str] | None:
    return Client._parse_header_lines(block[10:]) or None


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
    assert parse_delivery_headers(block) == _nats_py(block)
    assert parse_delivery_headers(block) == _nats_py(block)  # again, from the kept part


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
    assert parse_delivery_headers(block) == _nats_py(block)
    assert parse_delivery_headers(block) == _nats_py(block)


def test_the_kept_parts_stay_bounded() -> None:
    for i in range(rawroute._SUFFIX_CACHE_SIZE * 2):
        block = f"NATS/1.0\r\nNats-Msg-Id: id{i}\r\ntraceparent: 00-{i:032x}-01\r\n\r\n".encode()
        assert parse_delivery_headers(block) == _nats_py(block)
    assert len(rawroute._suffixes) <= rawroute._SUFFIX_CACHE_SIZE
