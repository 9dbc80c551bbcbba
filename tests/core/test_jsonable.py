"""``jsonable`` (what a recorded decision's detail goes through): its fast path for exact
builtin types gives what the general rules give, for any nesting of plain data."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from converge.core.decisions import jsonable


def reference(value: Any) -> Any:
    """The general rules alone: bytes to hex, mappings to dicts of str keys, tuples to lists."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): reference(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [reference(v) for v in value]
    return value


class Colour(StrEnum):
    RED = "red"


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.binary(max_size=8).map(bytearray),
    st.just(Colour.RED),
)
keys = st.one_of(st.text(max_size=6), st.integers(), st.just(Colour.RED))
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=4),
        st.dictionaries(st.text(max_size=6), inner, max_size=4).map(MappingProxyType),
    ),
    max_leaves=20,
)


@given(values)
def test_jsonable_gives_what_the_general_rules_give(value: Any) -> None:
    fast, slow = jsonable(value), reference(value)
    assert fast == slow
    assert repr(fast) == repr(slow)  # same types too (a key made str, a tuple made a list)


def test_bytes_become_hex_and_keys_strings() -> None:
    assert jsonable({1: b"\x01\xff", "a": (bytearray(b"\x02"), [None])}) == {
        "1": "01ff",
        "a": ["02", [None]],
    }
