"""The service key file: processes creating it at once on one data directory end up
with one key, and none ever reads a half-written file.

This is what lets several services (containers sharing a key volume, see
docker/docker-compose.yml) start together on one namespace: the namespace's signature
policy trusts the key of the first writer, so they must all hold that key.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from converge.core.identity import KEY_SIZE, Identity
from converge.errors import ConfigError
from converge.security import load_or_create_key

PROCESSES = 6
ROUNDS = 25

# Each child: on every line from stdin (the start signal), create-or-load the key of
# that round's fresh data directory and print its id. The parent writes the signal to
# every child back to back, so they all race on the same missing file.
CHILD = """
import sys
from pathlib import Path
from converge.security import load_or_create_key
root = Path(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    key = load_or_create_key(root / line.strip() / "keys" / "service.key")
    print(key.fingerprint, flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_processes_creating_the_key_at_once_agree_on_one(tmp_path: Path) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:  # all imported and waiting: the race starts together
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        for round_ in range(ROUNDS):
            for child in children:
                assert child.stdin is not None
                child.stdin.write(f"r{round_}\n")
                child.stdin.flush()
            ids = []
            for child in children:
                assert child.stdout is not None
                line = child.stdout.readline().strip()
                if not line:
                    assert child.stderr is not None
                    pytest.fail(f"a child failed: {child.stderr.read()[-2000:]}")
                ids.append(line)
            key_file = tmp_path / f"r{round_}" / "keys" / "service.key"
            on_disk = Identity.from_private_key(key_file.read_bytes()).fingerprint
            assert Counter(ids) == {on_disk: PROCESSES}, f"round {round_}"
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            assert sorted(p.name for p in key_file.parent.iterdir()) == ["service.key"]
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()  # end of input: the child exits
        for child in children:
            child.wait(timeout=60)
            for stream in (child.stdout, child.stderr):
                assert stream is not None
                stream.close()
    assert [child.returncode for child in children] == [0] * PROCESSES


def test_a_process_that_loses_the_race_returns_the_winners_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process links its key between this one's check and its own link."""
    path = tmp_path / "keys" / "service.key"
    winner = Identity.generate()
    link = os.link

    def others_first(source: str, target: str) -> None:
        path.write_bytes(winner.private_key_bytes())
        link(source, target)  # FileExistsError, as when another process won

    monkeypatch.setattr(os, "link", others_first)
    assert load_or_create_key(path).fingerprint == winner.fingerprint
    assert path.read_bytes() == winner.private_key_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["service.key"]  # no leftovers


def test_without_hard_links_it_creates_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys" / "service.key"

    def no_links(source: str, target: str) -> None:
        raise PermissionError(1, "Operation not permitted")  # EPERM, as vfat says

    monkeypatch.setattr(os, "link", no_links)
    created = load_or_create_key(path)
    assert load_or_create_key(path).fingerprint == created.fingerprint
    assert len(path.read_bytes()) == KEY_SIZE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["service.key"]


def test_a_file_that_is_not_a_key_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "service.key"
    path.write_bytes(b"x" * (KEY_SIZE + 1))
    with pytest.raises(ConfigError, match="not a 32-byte Ed25519"):
        load_or_create_key(path)
