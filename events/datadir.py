"""One owner per data directory: an advisory lock file with the holder's pid and URL.

As PostgreSQL's ``postmaster.pid``: the process that runs the embedded nats-server on a
data directory holds an exclusive ``flock`` on ``<data_dir>/server.pid`` for the server's
lifetime and writes its pid, the server's pid and URL into it. The nats-server child
inherits the locked descriptor, so the lock stays held while the server lives even when
the process that started it was killed. The lock is released by the kernel when the
last holder exits, so a crash never leaves a stale lock; the file itself is never
deleted (deleting it would let two processes lock two different files), only emptied.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOCK_FILE", "DataDirLock", "Holder"]

LOCK_FILE = "server.pid"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a data directory: the owning process, its server and URL (if known yet)."""

    pid: int | None
    server_pid: int | None
    url: str | None

    def describe(self) -> str:
        parts = [f"pid {self.pid}" if self.pid is not None else "an unknown process"]
        if self.server_pid is not None and self.server_pid != self.pid:
            parts.append(f"nats-server pid {self.server_pid}")
        parts.append(f"url {self.url}" if self.url else "no url yet")
        return ", ".join(parts)


class DataDirLock:
    """An exclusive, non-blocking lock on ``<data_dir>/server.pid``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def fd(self) -> int | None:
        """The locked descriptor (to pass to the server child), or None when not held."""
        return self._fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if free; return False (holding nothing) when another holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.write(pid=os.getpid(), server_pid=None, url=None)
        return True

    def write(self, *, pid: int | None, server_pid: int | None, url: str | None) -> None:
        """Record the holder (only while holding the lock)."""
        if self._fd is None:
            return
        body = json.dumps({"pid": pid, "server_pid": server_pid, "url": url}).encode() + b"\n"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, body, 0)

    def release(self) -> None:
        """Empty the file and drop the lock; idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing our descriptor drops our hold; a live child may still hold it

    def holder(self) -> Holder:
        """Read who holds the lock; fields are None while the holder is still starting."""
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}

        def _int(key: str) -> int | None:
            value = data.get(key)
            return value if isinstance(value, int) else None

        url = data.get("url")
        return Holder(_int("pid"), _int("server_pid"), url if isinstance(url, str) else None)
