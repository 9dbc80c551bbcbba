"""Run the Store contract on every backend: memory, file and NATS KV (real server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from converge.extensions.storage.file import FileStore
from converge.extensions.storage.memory import MemoryStore
from converge.extensions.storage.nats_kv import NatsKVStore
from converge.extensions.storage.testing import StoreContract


class TestMemoryStoreContract(StoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()


class TestFileStoreContract(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> FileStore:
        return FileStore(tmp_path / "store", fsync=False)


class TestFileStoreFsyncContract(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> FileStore:
        return FileStore(tmp_path / "store")


@pytest.mark.nats
class TestNatsKVStoreContract(StoreContract):
    @pytest_asyncio.fixture
    async def store(self, nats_url: str, namespace: str) -> AsyncIterator[NatsKVStore]:
        store = await NatsKVStore.connect(nats_url, bucket=namespace, storage="memory")
        try:
            yield store
        finally:
            await store.stop()
