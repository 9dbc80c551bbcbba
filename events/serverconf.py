"""The embedded nats-server's generated configuration file and its JetStream limits.

nats-server has no flag for ``max_file_store``, so the embedded server runs with a file
written at each start into its data directory (``nats-server.conf``). It optionally
includes an operator's own nats-server configuration (accounts, users, TLS,
authorization), then sets the JetStream block: the store directory in the data
directory and ``max_file_store`` below the free space of that filesystem, so a full
disk makes JetStream answer "insufficient resources" at once instead of failing writes
half way. A ``jetstream`` block in the included file is replaced by this one (the last
definition of a block wins in the nats-server format).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

__all__ = ["CONF_FILE", "MIN_FILE_STORE", "file_store_limit", "write_config"]

logger = logging.getLogger(__name__)

CONF_FILE = "nats-server.conf"
#: JetStream needs some room for its metadata; below this the server is not useful.
MIN_FILE_STORE = 1024 * 1024
_RESERVE_CAP = 64 * 1024 * 1024


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(path: Path) -> int:
    if not path.exists():
        return 0
    total = 0
    for entry in path.rglob("*"):
        try:
            if entry.is_file():
                total += entry.stat().st_size
        except OSError:
            continue
    return total


def file_store_limit(store_dir: Path) -> int:
    """Return a ``max_file_store`` below what ``store_dir``'s filesystem can hold.

    What the store already uses plus the free space, minus a reserve (a tenth of the
    free space, at least half of it up to 64 MiB) for JetStream's own indexes and
    anything else writing there; never below :data:`MIN_FILE_STORE`.
    """
    free = shutil.disk_usage(_existing(store_dir)).free
    reserve = max(free // 10, min(free // 2, _RESERVE_CAP))
    return max(_size(store_dir) + free - reserve, MIN_FILE_STORE)


def write_config(
    data_dir: Path,
    *,
    store_dir: Path,
    max_file_store: int,
    include: Path | None = None,
) -> Path:
    """Write ``<data_dir>/nats-server.conf`` and return its path."""
    lines = ["# Written by converge at each start of the embedded server; edits are lost."]
    if include is not None:
        # nats-server resolves an include relative to the including file, even when absolute.
        relative = os.path.relpath(include.resolve(), data_dir.resolve())
        lines.append(f"include {json.dumps(relative)}")
    lines += [
        "jetstream {",
        f"  store_dir: {json.dumps(str(store_dir.resolve()))}",
        f"  max_file_store: {int(max_file_store)}",
        "}",
        "",
    ]
    path = data_dir / CONF_FILE
    path.write_text("\n".join(lines))
    return path
