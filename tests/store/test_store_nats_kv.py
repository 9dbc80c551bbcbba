"""NatsKVStore specifics on a real nats-server: lifecycle, sharing, key encoding."""

from __future__ import annotations

import asyncio

import nats
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from converge.core.store import MAX_KEY_LENGTH
from converge.errors import ClosedError, ConfigError, EventLogError
from converge.extensions.storage.nats_kv import NatsKVStore, decode_kv_key, encode_kv_key
from events.connection import BrokerConfig

keys = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=MAX_KEY_LENGTH
)
KV_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/=")


@given(keys)
def test_key_encoding_round_trips(key: str) -> None:
    encoded = encode_kv_key(key)
    assert decode_kv_key(encoded) == key
    assert set(encoded) <= KV_KEY_CHARS


@given(keys, keys)
def test_key_encoding_preserves_prefixes(a: str, b: str) -> None:
    assume(len(a + b) <= MAX_KEY_LENGTH)  # two valid keys may make one too long
    assert encode_kv_key(a + b).startswith(encode_kv_key(a))


@pytest.mark.parametrize("name", ["=4", "=zz", "a=41", "=C3", "a.b", "a b"])
def test_foreign_kv_keys_do_not_decode(name: str) -> None:
    assert decode_kv_key(name) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one"),
        ({"servers": "nats://x:1", "bucket": "a.b"}, "bucket"),
        ({"servers": "nats://x:1", "history": 0}, "history"),
        ({"servers": "nats://x:1", "storage": "disk"}, "storage"),
        ({"servers": "nats://x:1", "timeout_sec": 0}, "timeout"),
        ({"servers": "nats://x:1", "ttl_sec": -1}, "ttl_sec"),
    ],
)
def test_bad_config(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NatsKVStore(**kwargs)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_unreachable_server_is_a_typed_error() -> None:
    config = BrokerConfig(
        servers="nats://127.0.0.1:1", max_reconnect_attempts=1, reconnect_time_wait_sec=0
    )
    with pytest.raises(EventLogError, match="cannot connect"):
        await NatsKVStore.connect(config, bucket="b")


@pytest.mark.nats
@pytest.mark.asyncio
async def test_lifecycle(nats_url: str, namespace: str) -> None:
    store = NatsKVStore(servers=nats_url, bucket=namespace)
    assert not store.is_started
    await store.put("k", b"v")  # starts itself
    assert store.is_started
    await store.start()  # idempotent
    await store.stop()
    await store.stop()
    with pytest.raises(ClosedError, match="stopped"):
        await store.get("k")
    with pytest.raises(ClosedError):
        await store.start()
    async with NatsKVStore(servers=nats_url, bucket=namespace) as again:
        assert await again.get("k") == b"v"


@pytest.mark.nats
@pytest.mark.asyncio
async def test_shared_client_is_not_closed(nats_url: str, namespace: str) -> None:
    client = await nats.connect(nats_url)
    try:
        async with NatsKVStore(client, bucket=namespace) as store:
            await store.put("k", b"v")
        assert client.is_connected
    finally:
        await client.close()


@pytest.mark.nats
@pytest.mark.asyncio
async def test_two_connections_race_put_if_absent(nats_url: str, namespace: str) -> None:
    stores = [await NatsKVStore.connect(nats_url, bucket=namespace) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(
                s.put_if_absent(f"k{i}", str(n).encode())
                for n, s in enumerate(stores)
                for i in range(5)
            )
        )
        assert sum(results) == 5
        for i in range(5):
            assert await stores[0].get(f"k{i}") is not None
    finally:
        for s in stores:
            await s.stop()


@pytest.mark.nats
@pytest.mark.asyncio
async def test_foreign_keys_are_ignored(nats_url: str, namespace: str) -> None:
    async with NatsKVStore(servers=nats_url, bucket=namespace) as store:
        await store.put("mine", b"1")
        client = await nats.connect(nats_url)
        try:
            kv = await client.jetstream().key_value(namespace)
            await kv.put("a.b", b"foreign")
        finally:
            await client.close()
        assert await store.list() == ["mine"]


@pytest.mark.nats
@pytest.mark.asyncio
async def test_values_visible_to_plain_kv_clients(nats_url: str, namespace: str) -> None:
    async with NatsKVStore(servers=nats_url, bucket=namespace) as store:
        await store.put("snapshots/tasks", b"{}")
        client = await nats.connect(nats_url)
        try:
            kv = await client.jetstream().key_value(namespace)
            entry = await kv.get("snapshots/tasks")
            # One tag byte says bytes (0x00) or msgpack plain data (0x01); the rest is as given.
            assert entry.value == b"\x00{}"
        finally:
            await client.close()


@pytest.mark.nats
@pytest.mark.asyncio
async def test_listing_leaves_no_consumer_on_the_broker(nats_url: str, namespace: str) -> None:
    # Each nats-py keys() call used to leave its consumer behind for five minutes; a
    # busy broker then carried thousands of them.
    async with NatsKVStore(servers=nats_url, bucket=namespace, storage="memory") as store:
        await store.put("k", b"v")
        for _ in range(5):
            assert await store.list() == ["k"]
        await store.delete("k")
        assert await store.list() == []
        client = await nats.connect(nats_url)
        try:
            info = await client.jetstream().stream_info(f"KV_{namespace}")
        finally:
            await client.close()
        assert info.state.consumer_count == 0


@pytest.mark.nats
@pytest.mark.asyncio
async def test_list_spans_many_batches(nats_url: str, namespace: str) -> None:
    names = [f"k/{i:04d}" for i in range(300)]
    async with NatsKVStore(servers=nats_url, bucket=namespace, storage="memory") as store:
        await asyncio.gather(*(store.put(name, b"v") for name in names))
        for name in names[::7]:
            await store.delete(name)
        kept = sorted(set(names) - set(names[::7]))
        assert await store.list() == kept
        assert await store.list("k/02") == [k for k in kept if k.startswith("k/02")]


@pytest.mark.nats
@pytest.mark.asyncio
async def test_concurrent_lists_see_every_key_stored_before_them(
    nats_url: str, namespace: str
) -> None:
    # Many listings at once on one connection, while other keys are being written:
    # every key stored before a listing started is in it.
    async with NatsKVStore(servers=nats_url, bucket=namespace, storage="memory") as store:
        stable = [f"stable/{i}" for i in range(20)]
        for name in stable:
            await store.put(name, b"v")

        async def write_more() -> None:
            for i in range(20):
                await store.put(f"moving/{i}", b"v")

        async def list_stable() -> list[str]:
            return await store.list("stable/")

        results = await asyncio.gather(write_more(), *(list_stable() for _ in range(10)))
        for listed in results[1:]:
            assert listed == sorted(stable)
        assert len(await store.list("moving/")) == 20
