"""Reach the broker: an embedded server or ``--url``, a fast preflight, then a connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import typer
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from converge._cli.common import one_line, usage_error
from converge.config import ConvergeConfig
from converge.errors import EventLogError
from events import EventLog, SignerRing
from events.connection import redact

__all__ = [
    "CONNECT_TIMEOUT_SEC",
    "broker",
    "connected",
    "event_log",
    "preflight",
    "serve",
    "split_server_config",
    "stop_signals",
]

CONNECT_TIMEOUT_SEC = 5.0

T = TypeVar("T")
logger = logging.getLogger("converge.cli")


@contextlib.asynccontextmanager
async def broker(cfg: ConvergeConfig, *, take_over: bool = False) -> AsyncIterator[str]:
    """Yield the broker URL: ``cfg.nats_url`` or an embedded server on the data dir.

    When another process owns the data directory (a ``converge server`` or another
    run), its server is used if it answers; otherwise the command fails naming it. With
    ``take_over`` (long-running commands) this process serves the directory itself, on
    the same port, when that owner stops first (see ``EmbeddedNatsServer``).
    """
    if cfg.nats_url is not None:
        yield cfg.nats_url
        return
    from events.server import EmbeddedNatsServer

    server = EmbeddedNatsServer(
        data_dir=cfg.nats_dir,
        host=cfg.host,
        port=cfg.port if cfg.port else None,
        reuse_running=True,
        max_file_store=cfg.nats_max_file_store,
        config_file=cfg.nats_server_config,
        take_over=take_over,
    )
    url = await server.start()
    _EMBEDDED.append(server)
    try:
        yield url
    finally:
        _EMBEDDED.remove(server)
        await server.stop()


async def preflight(url: str, timeout_sec: float = CONNECT_TIMEOUT_SEC) -> None:
    """Fail fast, in one line, unless a server of ``url`` greets as NATS (see ``probe``)."""
    from events.connection import probe

    last: EventLogError | None = None
    for server_url in [u.strip() for u in url.split(",") if u.strip()]:
        try:
            await probe(server_url, timeout_sec)
        except EventLogError as exc:
            last = exc
            continue
        return
    reason = one_line(last) if last is not None else f"no server URL in {url!r}"
    raise EventLogError(f"{reason}; check the URL, or omit --url to start an embedded server")


@contextlib.asynccontextmanager
async def event_log(
    cfg: ConvergeConfig, *, read_only: bool = False, signer: SignerRing | None = None
) -> AsyncIterator[EventLog]:
    """Yield a started JetStream event log on the broker; one attempt (inspection).

    ``read_only``: the log creates and changes no stream; a missing namespace or stream
    raises ``NotFoundError`` naming it. ``signer`` signs appends.
    """
    async with connected(cfg, retry=False, read_only=read_only, signer=signer) as (log, _url):
        yield log


@contextlib.asynccontextmanager
async def connected(
    cfg: ConvergeConfig,
    *,
    retry: bool = True,
    read_only: bool = False,
    signer: SignerRing | None = None,
    take_over: bool = False,
) -> AsyncIterator[tuple[EventLog, str]]:
    """Yield a started JetStream event log and the broker URL it uses.

    With ``retry`` an unreachable broker is retried with exponential backoff (0.2 s
    doubling to 2 s) for up to ``cfg.startup_timeout_sec``, each retry logged in one
    line; then the last reason is raised, naming the limit. ``signer`` signs appends.
    ``take_over``: see :func:`broker`.
    """
    async with broker(cfg, take_over=take_over) as url:
        limit = cfg.startup_timeout_sec if retry and cfg.nats_url is not None else 0.0
        log = await _with_startup_retries(
            limit, url, lambda: _open_log(cfg, url, read_only, signer)
        )
        try:
            yield log, url
        finally:
            await log.close()


async def _open_log(
    cfg: ConvergeConfig, url: str, read_only: bool = False, signer: SignerRing | None = None
) -> EventLog:
    from events import JetStreamEventLog

    await preflight(url, cfg.connect_timeout_sec)
    broker_config = cfg.broker_config(url)
    within = cfg.connect_timeout_sec * 2
    try:
        async with asyncio.timeout(within):
            return await JetStreamEventLog.connect(
                namespace=cfg.namespace,
                config=broker_config,
                replicas=cfg.replicas,
                create_streams=not read_only,
                signer=signer,
            )
    except TimeoutError:
        raise EventLogError(
            f"cannot connect to NATS at {redact(url)} within {within:g}s; "
            "check the URL and credentials"
        ) from None


async def _with_startup_retries(
    limit_sec: float, url: str, attempt_fn: Callable[[], Awaitable[T]]
) -> T:
    """Run ``attempt_fn`` until it succeeds, retrying broker failures for ``limit_sec``."""
    if limit_sec <= 0:
        return await attempt_fn()

    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "waiting for the broker at %s (attempt %d, retrying in %.1fs, up to %gs): %s",
            redact(url),
            state.attempt_number,
            wait,
            limit_sec,
            one_line(exc) if exc is not None else "unknown",
        )

    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(limit_sec),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type(EventLogError),
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                return await attempt_fn()
    except EventLogError as exc:
        raise EventLogError(
            f"{one_line(exc)} (gave up after {limit_sec:g}s of retries: startup_timeout_sec)"
        ) from exc
    raise AssertionError("unreachable: tenacity either returns or raises")


_CONVERGE_CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


def split_server_config(path: Path | None) -> tuple[Path | None, Path | None]:
    """Return ``(nats_server_config, converge_config)`` for ``converge server --config``.

    A YAML/TOML/JSON file is a converge config; any other file (``server.conf``) is a
    nats-server configuration for the embedded server to include.
    """
    if path is None or path.suffix.lower() in _CONVERGE_CONFIG_SUFFIXES:
        return None, path
    if not path.is_file():
        usage_error(f"nats-server config {str(path)!r} does not exist")
    return path, None


_EMBEDDED: list[Any] = []  # embedded servers this process runs (stopped on a forced exit)


@contextlib.contextmanager
def stop_signals(stop: asyncio.Event, limit_sec: float) -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP set ``stop``; the shutdown that follows has ``limit_sec`` to finish.

    The embedded server runs in its own process group, so a terminal's Ctrl-C (or hang-up)
    reaches only this process, which stops its agents first and the server last.

    Past the limit, or on a second signal, the process stops its embedded server
    (SIGTERM: JetStream flushes), prints one line and exits with status 1.
    """
    loop = asyncio.get_running_loop()
    timer: list[asyncio.TimerHandle] = []

    def _force() -> None:
        for server in _EMBEDDED:
            server.signal_stop()
        sys.stderr.write(
            f"error: shutdown did not finish within {limit_sec:g}s "
            "(shutdown_timeout_sec); exiting\n"
        )
        sys.stderr.flush()
        os._exit(1)

    def _on_signal() -> None:
        if stop.is_set():
            _force()
        stop.set()
        if not timer:
            timer.append(loop.call_later(limit_sec, _force))

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _on_signal)
            installed.append(sig)
    try:
        yield
    finally:
        for handle in timer:
            handle.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)


async def serve(cfg: ConvergeConfig, port: int) -> None:
    """Run the embedded nats-server on ``port`` (0: any) until SIGINT/SIGTERM."""
    from events.server import EmbeddedNatsServer

    stop = asyncio.Event()
    embedded = EmbeddedNatsServer(
        data_dir=cfg.nats_dir,
        host=cfg.host,
        port=port or None,
        max_file_store=cfg.nats_max_file_store,
        config_file=cfg.nats_server_config,
    )
    with stop_signals(stop, cfg.shutdown_timeout_sec):
        url = await embedded.start()
        _EMBEDDED.append(embedded)
        typer.echo(f"nats-server with JetStream at {url} (data in {cfg.nats_dir}); Ctrl-C stops it")
        try:
            while not stop.is_set() and embedded.is_running:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await stop.wait()
        finally:
            await embedded.stop()
            _EMBEDDED.remove(embedded)
    typer.echo("stopped", err=True)
