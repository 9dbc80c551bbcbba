"""Reach the broker: an embedded server or ``--url``, a fast preflight, then a connection."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any

import typer

from converge._cli.common import one_line
from converge.config import ConvergeConfig
from converge.errors import ConvergeError, EventLogError
from events import EventLog

__all__ = [
    "CONNECT_TIMEOUT_SEC",
    "broker",
    "connected",
    "event_log",
    "jetstream",
    "preflight",
    "serve",
]

CONNECT_TIMEOUT_SEC = 5.0


@contextlib.asynccontextmanager
async def broker(cfg: ConvergeConfig) -> AsyncIterator[str]:
    """Yield the broker URL: ``cfg.nats_url`` or an embedded server on the data dir.

    When another process owns the data directory (a ``converge server`` or another
    run), its server is used if it answers; otherwise the command fails naming it.
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
    )
    url = await server.start()
    try:
        yield url
    finally:
        await server.stop()


async def preflight(url: str) -> None:
    """Fail fast, in one line, unless a server of ``url`` greets as NATS (see ``probe``)."""
    from events.connection import probe

    last: EventLogError | None = None
    for server_url in [u.strip() for u in url.split(",") if u.strip()]:
        try:
            await probe(server_url, CONNECT_TIMEOUT_SEC)
        except EventLogError as exc:
            last = exc
            continue
        return
    reason = one_line(last) if last is not None else f"no server URL in {url!r}"
    raise EventLogError(f"{reason}; check the URL, or omit --url to start an embedded server")


@contextlib.asynccontextmanager
async def event_log(cfg: ConvergeConfig) -> AsyncIterator[EventLog]:
    """Yield a started JetStream event log on the configured (or embedded) broker."""
    async with connected(cfg) as (log, _url):
        yield log


@contextlib.asynccontextmanager
async def connected(cfg: ConvergeConfig) -> AsyncIterator[tuple[EventLog, str]]:
    """Yield a started JetStream event log and the broker URL it uses."""
    from events import JetStreamEventLog

    async with broker(cfg) as url:
        await preflight(url)
        broker_config = cfg.broker_config(url)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SEC * 2):
                log: EventLog = await JetStreamEventLog.connect(
                    namespace=cfg.namespace, config=broker_config, replicas=cfg.replicas
                )
        except TimeoutError:
            raise EventLogError(
                f"cannot connect to NATS at {url} within {CONNECT_TIMEOUT_SEC * 2:g}s; "
                "check the URL and credentials"
            ) from None
        try:
            yield log, url
        finally:
            await log.close()


@contextlib.asynccontextmanager
async def jetstream(cfg: ConvergeConfig) -> AsyncIterator[Any]:
    """Yield a JetStream context on the broker (no reconnects); close it on exit."""
    from events.connection import connect_nats

    async with broker(cfg) as url:
        await preflight(url)
        broker_config = cfg.broker_config(url).model_copy(update={"allow_reconnect": False})
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SEC):
                nc = await connect_nats(broker_config)
        except TimeoutError:
            raise ConvergeError(
                f"cannot reach NATS at {url} within {CONNECT_TIMEOUT_SEC:g}s; check the URL"
            ) from None
        try:
            yield nc.jetstream()
        finally:
            await nc.close()


async def serve(cfg: ConvergeConfig, port: int) -> None:
    """Run the embedded nats-server on ``port`` (0: any) until SIGINT/SIGTERM."""
    from events.server import EmbeddedNatsServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    embedded = EmbeddedNatsServer(data_dir=cfg.nats_dir, host=cfg.host, port=port or None)
    url = await embedded.start()
    typer.echo(f"nats-server with JetStream at {url} (data in {cfg.nats_dir}); Ctrl-C stops it")
    try:
        while not stop.is_set() and embedded.is_running:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()
    finally:
        await embedded.stop()
    typer.echo("stopped", err=True)
