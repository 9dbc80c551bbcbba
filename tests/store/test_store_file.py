"""FileStore specifics: encoding, persistence, atomicity, sharing, bad paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converge.core.store import MAX_KEY_LENGTH, Store, as_async_store, check_key
from converge.errors import ConfigError, DecodeError
from converge.extensions.storage.file import CHUNK, FileStore, decode_key, encode_key
from converge.extensions.storage.memory import MemoryStore

keys = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=MAX_KEY_LENGTH
)


@given(keys)
def test_encoding_round_trips(key: str) -> None:
    name = encode_key(key)
    assert decode_key(name) == key
    assert name not in (".", "..")
    assert "/" not in name and "~" not in name and not name.startswith(".")


def test_names_are_readable_for_plain_keys() -> None:
    assert encode_key("task-1_a") == "task-1_a"
    assert encode_key("a/b.c") == "a%2Fb%2Ec"


@pytest.mark.parametrize("name", ["a%2", "a%zz", "%C3", "a%2f", "x~", "a%41"])
def test_foreign_names_do_not_decode(name: str) -> None:
    assert decode_key(name) is None


def test_persists_across_instances(tmp_path: Path) -> None:
    FileStore(tmp_path).put("k", b"v")
    assert FileStore(tmp_path).get("k") == b"v"
    assert FileStore(tmp_path).list() == ["k"]


def test_creates_missing_directories(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "a" / "b")
    store.put("k", b"v")
    assert (tmp_path / "a" / "b").is_dir()


def test_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"")
    with pytest.raises(ConfigError, match="is a file"):
        FileStore(file)


def test_uncreatable_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot create"):
        FileStore(tmp_path / "f" / "sub")


def test_no_temporary_files_left(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("a", b"1")
    store.put("a", b"2")
    store.put_if_absent("a", b"3")
    store.put_if_absent("b", b"4")
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_foreign_and_temporary_files_are_ignored(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put("k", b"v")
    (tmp_path / ".tmp-abandoned").write_bytes(b"x")
    (tmp_path / "not%zzvalid").write_bytes(b"x")
    (tmp_path / "plaindir").mkdir()
    (tmp_path / "plaindir" / "inner").write_bytes(b"x")
    assert store.list() == ["k"]


def test_long_keys_are_chunked_into_directories(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    key = "\u00e9" * MAX_KEY_LENGTH  # 6 encoded bytes per character
    store.put(key, b"v")
    assert store.get(key) == b"v"
    assert store.list() == [key]
    for dirpath, _, filenames in os.walk(tmp_path):
        for name in [*Path(dirpath).relative_to(tmp_path).parts, *filenames]:
            assert len(name.encode()) <= CHUNK + 1
    assert store.put_if_absent(key, b"w") is False
    store.delete(key)
    assert store.list() == []


def test_two_instances_share_put_if_absent(tmp_path: Path) -> None:
    a, b = FileStore(tmp_path), FileStore(tmp_path)
    assert a.put_if_absent("k", b"a") is True
    assert b.put_if_absent("k", b"b") is False
    assert b.get("k") == b"a"


_RACER = """
import sys
from converge.extensions.storage.file import FileStore
store = FileStore(sys.argv[1], fsync=False)
won = [k for k in range(40) if store.put_if_absent(f"key-{k}", sys.argv[2].encode())]
print(",".join(map(str, won)))
"""


@pytest.mark.slow
def test_put_if_absent_across_processes(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(tmp_path), f"p{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    wins: dict[int, str] = {}
    for i, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        for won in filter(None, out.strip().split(",")):
            assert int(won) not in wins, f"key-{won} won twice"
            wins[int(won)] = f"p{i}"
    assert sorted(wins) == list(range(40))
    store = FileStore(tmp_path)
    for k, winner in wins.items():
        assert store.get(f"key-{k}") == winner.encode()


def test_fallback_to_exclusive_create(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: str, dst: str) -> None:
        raise PermissionError(1, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    store = FileStore(tmp_path)
    assert store.put_if_absent("k", b"v") is True
    assert store.put_if_absent("k", b"w") is False
    assert store.get("k") == b"v"
    assert sorted(os.listdir(tmp_path)) == ["k"]
    # between the exclusive create and the rename a reader sees the key as absent
    (tmp_path / "claimed").touch()
    assert store.get("claimed") is None
    assert store.put_if_absent("claimed", b"x") is False


def test_check_key_messages() -> None:
    with pytest.raises(DecodeError, match="must not be empty"):
        check_key("")
    with pytest.raises(DecodeError, match="control character"):
        check_key("a\tb")
    with pytest.raises(DecodeError, match="limit is 256"):
        check_key("x" * 300)
    with pytest.raises(DecodeError, match="must be a str"):
        check_key(3)


@pytest.mark.asyncio
async def test_as_async_store_wraps_sync_stores() -> None:
    memory = MemoryStore()
    wrapped = as_async_store(memory)
    async with wrapped:
        await wrapped.put("k", b"v")
    assert memory.get("k") == b"v"
    assert as_async_store(wrapped) is wrapped
    with pytest.raises(ConfigError, match="Store or an AsyncStore"):
        as_async_store({})  # type: ignore[arg-type]


def test_sync_store_context_manager(tmp_path: Path) -> None:
    with FileStore(tmp_path) as store:
        assert isinstance(store, Store)
        store.put("k", b"v")
    assert repr(store) == f"FileStore({str(tmp_path)!r})"
