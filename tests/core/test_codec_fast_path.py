"""check_value's fast path for plain builtin data gives what the careful walk gives."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converge.core._codec import MAX_DEPTH, _check_value, check_value
from converge.errors import DecodeError

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4) | st.integers(0, 3), inner, max_size=4)
    ),
    max_leaves=20,
)


def _outcome(fn: Any, value: object) -> tuple[str, object]:
    try:
        return "ok", fn(value, "v")
    except DecodeError as exc:
        return "error", str(exc)


@given(_values)
def test_fast_path_matches_the_careful_walk(value: object) -> None:
    assert _outcome(check_value, value) == _outcome(_check_value, value)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1])
def test_depth_limit_is_the_same_on_both_paths(depth: int) -> None:
    assert _outcome(check_value, _nested(depth)) == _outcome(_check_value, _nested(depth))


def test_other_mappings_and_subclasses_take_the_careful_walk() -> None:
    class Name(str):
        pass

    value = OrderedDict(a=(1, Name("x")), b=bytearray(b"z"))
    assert check_value(value, "v") == {"a": [1, "x"], "b": b"z"}
    with pytest.raises(DecodeError, match=r"v\['a'\]\[1\] holds a set"):
        check_value({"a": [1, {2}]}, "v")
