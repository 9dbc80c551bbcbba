"""The Store contract: one test suite every sync and async store backend passes.

Subclass :class:`StoreContract` in a test module and give it a ``store`` fixture
that returns (or yields) a fresh, empty store, either a sync
:class:`~converge.core.store.Store` or a started :class:`~converge.core.store.AsyncStore`::

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(tmp_path)

The tests drive both kinds through :func:`~converge.core.store.as_async_store`.
"""

from __future__ import annotations

import asyncio

import pytest

from converge.core.store import MAX_KEY_LENGTH, AsyncStore, Store, as_async_store
from converge.errors import DecodeError

__all__ = ["BAD_KEYS", "ODD_KEYS", "StoreContract"]

ODD_KEYS: tuple[str, ...] = (
    "plain",
    "a/b/c",
    "a.b",
    ".",
    "..",
    ".hidden",
    "-",
    "_",
    "~",
    "a~/b",
    "with space",
    "%41",
    "=41",
    "a=b",
    "*",
    ">",
    "key\u00e9",
    "\u043a\u043b\u044e\u0447",
    "\U0001f389 party",
    "x" * MAX_KEY_LENGTH,
    "\u00e9" * MAX_KEY_LENGTH,
    "\U0001f389" * MAX_KEY_LENGTH,
)
"""Keys that every backend stores and lists back unchanged."""

BAD_KEYS: tuple[object, ...] = (
    "",
    "a\x00b",
    "line\nbreak",
    "del\x7f",
    "x" * (MAX_KEY_LENGTH + 1),
    "\ud800",
    None,
    42,
    b"bytes",
)
"""Keys every backend refuses with ``DecodeError``."""


class StoreContract:
    """Behaviour every store backend guarantees; subclass and provide ``store``."""

    @pytest.fixture
    def kv(self, store: Store | AsyncStore) -> AsyncStore:
        return as_async_store(store)

    @pytest.mark.asyncio
    async def test_get_missing_returns_none(self, kv: AsyncStore) -> None:
        assert await kv.get("missing") is None

    @pytest.mark.asyncio
    async def test_put_then_get(self, kv: AsyncStore) -> None:
        await kv.put("k", b"v1")
        assert await kv.get("k") == b"v1"

    @pytest.mark.asyncio
    async def test_put_replaces(self, kv: AsyncStore) -> None:
        await kv.put("k", b"v1")
        await kv.put("k", b"v2")
        assert await kv.get("k") == b"v2"
        assert await kv.list() == ["k"]

    @pytest.mark.asyncio
    async def test_values_are_bytes_exactly(self, kv: AsyncStore) -> None:
        await kv.put("empty", b"")
        await kv.put("binary", bytes(range(256)))
        await kv.put("big", b"x" * 200_000)
        await kv.put("array", bytearray(b"\x00\x01"))
        assert await kv.get("empty") == b""
        assert await kv.get("binary") == bytes(range(256))
        assert await kv.get("big") == b"x" * 200_000
        got = await kv.get("array")
        assert got == b"\x00\x01"
        assert type(got) is bytes

    @pytest.mark.asyncio
    async def test_delete(self, kv: AsyncStore) -> None:
        await kv.put("k", b"v")
        await kv.delete("k")
        assert await kv.get("k") is None
        assert await kv.list() == []

    @pytest.mark.asyncio
    async def test_delete_missing_is_noop(self, kv: AsyncStore) -> None:
        await kv.delete("never-there")
        assert await kv.get("never-there") is None

    @pytest.mark.asyncio
    async def test_list_sorted_and_prefixed(self, kv: AsyncStore) -> None:
        for key in ("b/2", "a/1", "b/1", "c", "bb"):
            await kv.put(key, b"x")
        assert await kv.list() == ["a/1", "b/1", "b/2", "bb", "c"]
        assert await kv.list("b") == ["b/1", "b/2", "bb"]
        assert await kv.list("b/") == ["b/1", "b/2"]
        assert await kv.list("zzz") == []
        assert await kv.list("") == await kv.list()

    @pytest.mark.asyncio
    async def test_list_empty_store(self, kv: AsyncStore) -> None:
        assert await kv.list() == []

    @pytest.mark.asyncio
    async def test_list_prefix_does_not_confuse_encoded_characters(self, kv: AsyncStore) -> None:
        for key in ("a.b", "a/b", "ab", "a b", "a%2Eb", "a=2Eb"):
            await kv.put(key, key.encode())
        assert await kv.list("a.") == ["a.b"]
        assert await kv.list("a/") == ["a/b"]
        assert await kv.list("a%") == ["a%2Eb"]
        assert await kv.list("a=") == ["a=2Eb"]
        assert len(await kv.list("a")) == 6

    @pytest.mark.asyncio
    async def test_put_if_absent(self, kv: AsyncStore) -> None:
        assert await kv.put_if_absent("k", b"first") is True
        assert await kv.put_if_absent("k", b"second") is False
        assert await kv.get("k") == b"first"

    @pytest.mark.asyncio
    async def test_put_if_absent_after_delete(self, kv: AsyncStore) -> None:
        await kv.put("k", b"old")
        await kv.delete("k")
        assert await kv.put_if_absent("k", b"new") is True
        assert await kv.get("k") == b"new"

    @pytest.mark.asyncio
    async def test_put_if_absent_race_has_one_winner(self, kv: AsyncStore) -> None:
        results = await asyncio.gather(
            *(kv.put_if_absent("race", str(i).encode()) for i in range(8))
        )
        assert sorted(results) == [False] * 7 + [True]
        winner = results.index(True)
        assert await kv.get("race") == str(winner).encode()

    @pytest.mark.parametrize("key", ODD_KEYS, ids=range(len(ODD_KEYS)))
    @pytest.mark.asyncio
    async def test_odd_keys_round_trip(self, kv: AsyncStore, key: str) -> None:
        await kv.put(key, key.encode("utf-8"))
        assert await kv.get(key) == key.encode("utf-8")
        assert await kv.list() == [key]
        assert await kv.list(key) == [key]
        assert await kv.put_if_absent(key, b"other") is False
        await kv.delete(key)
        assert await kv.get(key) is None
        assert await kv.list() == []

    @pytest.mark.asyncio
    async def test_odd_keys_listed_together(self, kv: AsyncStore) -> None:
        for key in ODD_KEYS:
            await kv.put(key, b"v")
        assert await kv.list() == sorted(ODD_KEYS)

    @pytest.mark.parametrize("key", BAD_KEYS, ids=range(len(BAD_KEYS)))
    @pytest.mark.asyncio
    async def test_bad_keys_refused(self, kv: AsyncStore, key: object) -> None:
        with pytest.raises(DecodeError, match="store key"):
            await kv.put(key, b"v")  # type: ignore[arg-type]
        with pytest.raises(DecodeError, match="store key"):
            await kv.get(key)  # type: ignore[arg-type]
        with pytest.raises(DecodeError, match="store key"):
            await kv.delete(key)  # type: ignore[arg-type]
        with pytest.raises(DecodeError, match="store key"):
            await kv.put_if_absent(key, b"v")  # type: ignore[arg-type]
        assert await kv.list() == []

    @pytest.mark.parametrize(
        "value",
        ["text", 42, 1.5, True, [1, "two", b"3"], {"a": {"b": [None, 2.5]}, "n": -7}],
    )
    @pytest.mark.asyncio
    async def test_plain_data_round_trips(self, kv: AsyncStore, value: object) -> None:
        await kv.put("k", value)
        assert await kv.get("k") == value
        assert await kv.put_if_absent("k", value) is False
        assert await kv.put_if_absent("k2", value) is True
        assert await kv.get("k2") == value

    @pytest.mark.asyncio
    async def test_none_value_is_stored(self, kv: AsyncStore) -> None:
        await kv.put("k", None)
        assert await kv.list() == ["k"]
        assert await kv.get("k") is None

    @pytest.mark.parametrize("value", [{1, 2}, object(), 2**70, {"a": object()}])
    @pytest.mark.asyncio
    async def test_values_that_are_not_plain_data_refused(
        self, kv: AsyncStore, value: object
    ) -> None:
        with pytest.raises(DecodeError, match="cannot be stored"):
            await kv.put("k", value)
        with pytest.raises(DecodeError, match="cannot be stored"):
            await kv.put_if_absent("k", value)
        assert await kv.get("k") is None
        assert await kv.list() == []

    @pytest.mark.asyncio
    async def test_bad_prefix_refused(self, kv: AsyncStore) -> None:
        with pytest.raises(DecodeError, match="prefix"):
            await kv.list(None)  # type: ignore[arg-type]
