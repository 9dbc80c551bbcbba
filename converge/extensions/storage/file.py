"""A :class:`~converge.core.store.Store` that keeps one file per key in a directory.

Keys are encoded into file names: ASCII letters, digits, ``-`` and ``_`` stay as
they are, every other character becomes ``%XX`` per UTF-8 byte (so ``/``, ``.``,
spaces and non-ASCII keys are safe, and no name can be ``.`` or ``..``). An
encoded name longer than :data:`CHUNK` bytes is split into nested directories
whose names end in ``~`` (a character encoded names never contain). Temporary
files start with ``.`` and are never listed.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import logging
import os
import string
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar

from converge.core.store import Store, check_key, check_prefix, check_value, decode_value
from converge.errors import ConfigError

__all__ = ["CHUNK", "FileStore", "decode_key", "encode_key"]

logger = logging.getLogger(__name__)

CHUNK = 200
"""Longest file or directory name (bytes) an encoded key is split into."""

_SAFE = frozenset(string.ascii_letters + string.digits + "-_")
_DIR_MARK = "~"
_TMP_PREFIX = ".tmp-"


def encode_key(key: str) -> str:
    """Return the file-name encoding of ``key`` (one string, before chunking)."""
    out: list[str] = []
    for ch in check_key(key):
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def decode_key(name: str) -> str | None:
    """Return the key encoded as ``name``, or ``None`` if ``name`` is no canonical encoding."""
    try:
        key = urllib.parse.unquote_to_bytes(name).decode("utf-8")
        return key if encode_key(key) == name else None
    except (UnicodeDecodeError, ValueError):
        return None


def _chunks(name: str) -> builtins.list[str]:
    parts: builtins.list[str] = []
    while len(name) > CHUNK:
        cut = CHUNK
        # never split inside a %XX escape
        if name[cut - 1] == "%":
            cut -= 1
        elif name[cut - 2] == "%":
            cut -= 2
        parts.append(name[:cut])
        name = name[cut:]
    parts.append(name)
    return parts


class FileStore(Store):
    """Keep each value in its own file under the directory ``path``.

    ``put`` writes a temporary file in the same directory, flushes it (and fsyncs
    it when ``fsync`` is true) and renames it over the target with ``os.replace``,
    so readers see the old or the new value, never a partial one. ``put_if_absent``
    publishes a complete temporary file with ``os.link``, which fails atomically when
    the target exists (on file systems without hard links it falls back to creating
    the target with ``O_CREAT | O_EXCL``). Several processes may share one directory.
    The directory is created if missing; ``ConfigError`` when ``path`` is a file or
    cannot be created. Disk failures raise ``OSError``. Keys that differ only in
    letter case collide on case-insensitive file systems. ``base_path`` is the seed's
    name of ``path``.
    """

    atomic_put_if_absent: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        fsync: bool = True,
        base_path: str | os.PathLike[str] | None = None,
    ) -> None:
        given = path if base_path is None else base_path
        if given is None or (path is not None and base_path is not None):
            raise ConfigError("FileStore takes its directory once: path or base_path=")
        root = Path(given)
        if root.exists() and not root.is_dir():
            raise ConfigError(f"FileStore path {str(root)!r} is a file; give a directory")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"FileStore cannot create directory {str(root)!r}: {exc}") from exc
        self.path = root
        self.fsync = fsync

    @property
    def base_path(self) -> Path:
        """The directory (the seed's name of :attr:`path`)."""
        return self.path

    def __repr__(self) -> str:
        return f"FileStore({str(self.path)!r})"

    # -- paths -------------------------------------------------------------------

    def _target(self, key: str) -> Path:
        parts = _chunks(encode_key(key))
        target = self.path
        for part in parts[:-1]:
            target = target / (part + _DIR_MARK)
        return target / parts[-1]

    def _write_temp(self, data: bytes) -> str:
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self.path)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    def _sync_dir(self, directory: Path) -> None:
        if not self.fsync:
            return
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:  # some platforms cannot open directories
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    # -- Store -------------------------------------------------------------------

    def put(self, key: str, value: object) -> None:
        key = check_key(key)
        data = check_value(value, key)
        target = self._target(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_temp(data)
        try:
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._sync_dir(target.parent)

    def get(self, key: str) -> Any:
        key = check_key(key)
        try:
            data = self._target(key).read_bytes()
        except FileNotFoundError:
            return None
        if not data:  # claimed by put_if_absent on a file system without hard links
            return None
        return decode_value(data, key)

    def delete(self, key: str) -> None:
        target = self._target(check_key(key))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)

    def list(self, prefix: str = "") -> builtins.list[str]:
        prefix = check_prefix(prefix)
        keys: builtins.list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel = Path(dirpath).relative_to(self.path).parts
            if any(not part.endswith(_DIR_MARK) for part in rel):
                dirnames[:] = []
                continue
            dirnames[:] = [d for d in dirnames if d.endswith(_DIR_MARK)]
            head = "".join(part[: -len(_DIR_MARK)] for part in rel)
            for filename in filenames:
                if filename.startswith("."):
                    continue
                key = decode_key(head + filename)
                if key is None:
                    logger.debug("FileStore %s: ignoring foreign file %s", self.path, filename)
                    continue
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return keys

    def put_if_absent(self, key: str, value: object) -> bool:
        key = check_key(key)
        data = check_value(value, key)
        target = self._target(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_temp(data)
        try:
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                return self._create_exclusive(target, data)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._sync_dir(target.parent)
        return True

    def _create_exclusive(self, target: Path, data: bytes) -> bool:
        # Claim the name with an empty file (O_EXCL decides the race), then publish the
        # complete value over it with an atomic rename. Until then ``get`` reads the
        # empty file as absent: every stored value has at least its tag byte.
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return False
        tmp = self._write_temp(data)
        try:
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._sync_dir(target.parent)
        return True
