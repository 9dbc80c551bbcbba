"""The ``converge`` command line: run a demo network, replay events, inspect streams.

Commands: ``run``, ``replay``, ``projections rebuild|status``, ``streams ls|info``,
``server``. Without ``--url`` (or ``CONVERGE_NATS_URL``) a command starts an embedded
nats-server on the data directory (``./.converge/nats``), so ``replay`` reads what
``run`` wrote. Bad arguments exit with code 2 and one line on stderr; an unreachable
broker or another runtime failure exits with code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer

from converge.config import ConvergeConfig, load_config
from converge.errors import ConfigError, ConvergeError, EventLogError
from events import EventLog, RecordedEvent

__all__ = ["app", "main"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

app = typer.Typer(
    name="converge",
    help="Networks of autonomous agents, event-sourced on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
projections_app = typer.Typer(
    help="Rebuild or inspect the task and pool projections.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
streams_app = typer.Typer(
    help="List and inspect the JetStream streams.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(projections_app, name="projections")
app.add_typer(streams_app, name="streams")

CONNECT_TIMEOUT_SEC = 5.0

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", "-u", help="NATS URL(s), comma-separated; default: embedded server."),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML or TOML config file.")]
NamespaceOpt = Annotated[
    str | None, typer.Option("--namespace", help="Stream namespace (default: converge).")
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Local state directory (default: ./.converge).")
]


# -- plumbing ------------------------------------------------------------------


def _usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def _config(config: Path | None, **overrides: Any) -> ConvergeConfig:
    try:
        cfg = load_config(config, **overrides)
    except ConfigError as exc:
        _usage_error(str(exc))
    logging.basicConfig(
        level=getattr(logging, cfg.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return cfg


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _execute(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``coro_fn()``; map converge errors to one-line messages and exit codes."""
    try:
        return asyncio.run(coro_fn())
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(code=130) from None
    except ConfigError as exc:
        _usage_error(_one_line(exc))
    except (ConvergeError, OSError) as exc:
        _fail(_one_line(exc))


@contextlib.asynccontextmanager
async def _broker(cfg: ConvergeConfig) -> AsyncIterator[str]:
    """Yield the broker URL: ``cfg.nats_url`` or an embedded server on the data dir."""
    if cfg.nats_url is not None:
        yield cfg.nats_url
        return
    from events.server import EmbeddedNatsServer

    server = EmbeddedNatsServer(
        data_dir=cfg.nats_dir, host=cfg.host, port=cfg.port if cfg.port else None
    )
    url = await server.start()
    try:
        yield url
    finally:
        await server.stop()


async def _preflight(url: str) -> None:
    """Fail fast, in one line, when no server of ``url`` accepts TCP connections."""
    last: BaseException | None = None
    for server_url in [u.strip() for u in url.split(",") if u.strip()]:
        hostport = server_url.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        if not host:
            host, port = hostport, "4222"
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SEC):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, TimeoutError, ValueError) as exc:
            last = exc
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    reason = _one_line(last) if last is not None else "no server URL"
    raise EventLogError(
        f"cannot reach NATS at {url}: {reason}; check the URL, "
        "or omit --url to start an embedded server"
    )


@contextlib.asynccontextmanager
async def _event_log(cfg: ConvergeConfig) -> AsyncIterator[EventLog]:
    """Yield a started JetStream event log on the configured (or embedded) broker."""
    async with _connected(cfg) as (log, _url):
        yield log


@contextlib.asynccontextmanager
async def _connected(cfg: ConvergeConfig) -> AsyncIterator[tuple[EventLog, str]]:
    """Yield a started JetStream event log and the broker URL it uses."""
    from events import JetStreamEventLog

    async with _broker(cfg) as url:
        await _preflight(url)
        broker = cfg.broker_config(url)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SEC * 2):
                log: EventLog = await JetStreamEventLog.connect(
                    namespace=cfg.namespace, config=broker, replicas=cfg.replicas
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


def _jsonable(recorded: RecordedEvent) -> dict[str, Any]:
    event = recorded.event
    return {
        "stream": recorded.stream,
        "subject": recorded.subject,
        "seq": recorded.sequence,
        "time": recorded.time,
        "type": event.type,
        "version": event.version,
        "id": event.id,
        "actor": event.actor,
        "data": event.payload(),
    }


def _parse_time(value: str, option: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _usage_error(f"{option} {value!r} is neither Unix seconds nor an ISO-8601 time")
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _parse_as_of(value: str | None) -> int | float | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    when = _parse_time(value, "--as-of")
    return when


# -- run -------------------------------------------------------------------------


@app.command()
def run(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    agents: Annotated[
        int | None, typer.Option("--agents", "-n", help="Number of worker agents.", min=1)
    ] = None,
    tasks: Annotated[
        int | None, typer.Option("--tasks", "-t", help="Demo tasks to submit (0: none).", min=0)
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option("--duration", "-d", help="Stop after this many seconds.", min=0.0),
    ] = None,
    transport: Annotated[
        str | None,
        typer.Option("--transport", help="Agent messaging: local, nats, tcp or websocket."),
    ] = None,
    pool_id: Annotated[str | None, typer.Option("--pool-id", help="Pool of the agents.")] = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Run worker agents and a submitter until every demo task is done (or --duration)."""
    cfg = _config(
        config,
        nats_url=url,
        agents=agents,
        tasks=tasks,
        transport=transport,
        pool_id=pool_id,
        namespace=namespace,
        data_dir=data_dir,
    )
    if cfg.tasks == 0 and duration is None:
        logger.info("no demo tasks: running until interrupted")
    summary = _execute(lambda: _run(cfg, duration, quiet))
    typer.echo(orjson.dumps(summary).decode())


async def _run(cfg: ConvergeConfig, duration: float | None, quiet: bool) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with _connected(cfg) as (log, url):
            return await _run_agents(cfg, log, url, duration, quiet, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def _run_agents(
    cfg: ConvergeConfig,
    log: EventLog,
    url: str,
    duration: float | None,
    quiet: bool,
    stop: asyncio.Event,
) -> dict[str, Any]:
    from converge.coordination.pool_manager import PoolManager
    from converge.coordination.task_manager import TaskManager
    from converge.runtime.demo import DemoSubmitter, DemoWorker
    from converge.runtime.loop import AgentRuntime

    started = time.monotonic()
    tm = TaskManager(log)
    pm = PoolManager(log)
    await tm.start()
    await pm.start()
    runtimes: list[AgentRuntime] = []
    transports: list[Any] = []
    try:
        if pm.get_pool(cfg.pool_id) is None:
            with contextlib.suppress(ConvergeError):  # created concurrently by another process
                await pm.create_pool({"id": cfg.pool_id})
            await pm.sync()
        discovery = _discovery(cfg, log)
        store = _checkpoint_store(cfg)
        workers = [DemoWorker(pool_id=cfg.pool_id) for _ in range(cfg.agents)]
        submitter = DemoSubmitter(cfg.tasks, pool_id=cfg.pool_id, seed=int(time.time()))
        for worker in workers:
            await pm.join_pool(worker.id, cfg.pool_id)
        transports = await _transports(cfg, url, [*workers, submitter])
        for agent, transport in zip([*workers, submitter], transports, strict=True):
            runtimes.append(
                AgentRuntime(
                    agent,
                    transport,
                    task_manager=tm,
                    pool_manager=pm,
                    discovery_service=discovery,
                    checkpoint_store=store,
                    decision_log=log,
                    tick_interval_sec=cfg.tick_interval_sec,
                )
            )
        for runtime in runtimes:
            await runtime.start()
        if not quiet:
            typer.echo(
                f"running {cfg.agents} worker(s) and a submitter of {cfg.tasks} task(s) "
                f"in namespace {cfg.namespace!r}",
                err=True,
            )
        total = len(submitter.task_ids)
        last_done = -1
        while not stop.is_set():
            done = sum(
                1
                for task_id in submitter.task_ids
                if (task := tm.get_task(task_id)) is not None and task.state.is_terminal
            )
            if done != last_done and not quiet:
                typer.echo(f"progress: {done}/{total} tasks done", err=True)
                last_done = done
            if total and done == total:
                break
            if duration is not None and time.monotonic() - started >= duration:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await stop.wait()
        states = Counter(
            task.state.value
            for task_id in submitter.task_ids
            if (task := tm.get_task(task_id)) is not None
        )
        sample = next(
            (
                task.result
                for task_id in submitter.task_ids
                if (task := tm.get_task(task_id)) is not None and task.result is not None
            ),
            None,
        )
        return {
            "namespace": cfg.namespace,
            "tasks": total,
            "states": dict(states),
            "per_worker": {w.id[:12]: w.completed for w in workers},
            "sample_result": sample,
            "seconds": round(time.monotonic() - started, 3),
        }
    finally:
        for runtime in reversed(runtimes):
            await runtime.stop()
        for transport in transports:  # those no runtime started (idempotent for the rest)
            await transport.stop()
        await pm.stop()
        await tm.stop()


def _discovery(cfg: ConvergeConfig, log: EventLog) -> Any:
    try:
        from converge.network.discovery import DiscoveryService
    except ImportError:
        logger.warning("discovery is not available; agents are not registered")
        return None
    return DiscoveryService(log if cfg.discovery_store == "events" else None)


def _checkpoint_store(cfg: ConvergeConfig) -> Any:
    if cfg.store_backend == "file":
        from converge.extensions.storage.file import FileStore

        return FileStore(cfg.store_path or cfg.data_dir / "store")
    from converge.extensions.storage.memory import MemoryStore

    return MemoryStore()


LOOPBACK = "127.0.0.1"


async def _transports(cfg: ConvergeConfig, url: str, agents: list[Any]) -> list[Any]:
    """Return one transport per agent, as ``cfg.transport`` says.

    ``tcp`` and ``websocket`` transports listen on loopback ephemeral ports: they are
    started here (the runtime's ``start()`` is then a no-op) and every one knows every
    other one's address. On an error the ones started already are stopped.
    """
    if cfg.transport == "nats":
        from converge.network.transport.nats import NatsTransport

        broker = cfg.broker_config(url)
        return [NatsTransport(a.id, broker, namespace=cfg.namespace) for a in agents]
    if cfg.transport == "local":
        from converge.network.transport.local import LocalTransport, LocalTransportRegistry

        registry = LocalTransportRegistry()
        return [LocalTransport(a.id, registry) for a in agents]
    transports: list[Any]
    if cfg.transport == "tcp":
        from converge.network.transport.tcp import TcpTransport

        transports = [TcpTransport(LOOPBACK, 0, agent_id=a.id) for a in agents]
    else:
        try:
            from converge.network.transport.websocket import WebSocketTransport
        except ImportError as exc:
            raise ConfigError(f"transport websocket: {exc}") from None
        transports = [WebSocketTransport(a.id, host=LOOPBACK, port=0) for a in agents]
    try:
        for transport in transports:
            await transport.start()
        for transport in transports:
            for other in transports:
                if other is not transport:
                    address = other.address if cfg.transport == "tcp" else other.url
                    transport.add_peer(other.agent_id, address)
    except BaseException:
        for transport in transports:
            await transport.stop()
        raise
    return transports


# -- replay ----------------------------------------------------------------------


@app.command()
def replay(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    stream: Annotated[
        str | None,
        typer.Option("--stream", "-s", help="Stream kind: tasks, pools, decisions, coord, agents."),
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="Relative subject, wildcards allowed (tasks.>).")
    ] = None,
    start_seq: Annotated[int | None, typer.Option("--start-seq", min=1)] = None,
    end_seq: Annotated[int | None, typer.Option("--end-seq", min=1)] = None,
    start_time: Annotated[
        str | None, typer.Option("--start-time", help="Unix seconds or ISO-8601.")
    ] = None,
    end_time: Annotated[
        str | None, typer.Option("--end-time", help="Unix seconds or ISO-8601.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Print at most N events.")
    ] = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print the events of a stream, subject or range as JSON lines."""
    cfg = _config(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    if start_seq is not None and end_seq is not None and end_seq < start_seq:
        _usage_error(f"--end-seq {end_seq} is before --start-seq {start_seq}")
    if subject is not None and stream is None:
        stream = subject.split(".", 1)[0]
    if stream is not None:
        _check_kind(stream)
    t0 = _parse_time(start_time, "--start-time") if start_time is not None else None
    t1 = _parse_time(end_time, "--end-time") if end_time is not None else None

    async def go() -> int:
        count = 0
        async with _event_log(cfg) as log:
            async for recorded in log.read(
                stream=stream,
                subject=subject,
                start_seq=start_seq,
                end_seq=end_seq,
                start_time=t0,
                end_time=t1,
            ):
                typer.echo(orjson.dumps(_jsonable(recorded), default=str).decode())
                count += 1
                if limit is not None and count >= limit:
                    break
        return count

    _execute(go)


def _check_kind(kind: str) -> None:
    from events.subjects import validate_kind

    try:
        validate_kind(kind)
    except ConfigError as exc:
        _usage_error(_one_line(exc))


# -- projections -----------------------------------------------------------------


async def _projection_summary(cfg: ConvergeConfig, as_of: int | float | None) -> dict[str, Any]:
    from projections import PoolProjection, ProjectionRunner, TaskProjection

    async with _event_log(cfg) as log:
        tasks = TaskProjection()
        pools = PoolProjection()
        await ProjectionRunner(tasks, log).rebuild(as_of)
        await ProjectionRunner(pools, log).rebuild(as_of)
        last = {kind: await log.last_sequence(stream=kind) for kind in ("tasks", "pools")}
    return {
        "namespace": cfg.namespace,
        "as_of": as_of,
        "tasks": {
            "total": len(tasks.tasks),
            "by_state": dict(Counter(t.state.value for t in tasks.tasks.values())),
        },
        "pools": {
            "total": len(pools.pools),
            "agents": {p.id: len(p.agents) for p in pools.pools.values()},
        },
        "position": {**tasks.position, **pools.position},
        "stream_last_seq": last,
    }


@projections_app.command("rebuild")
def projections_rebuild(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Stream sequence (int) or time (Unix seconds with a dot, ISO-8601)."
        ),
    ] = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Rebuild the task and pool projections from their streams and print counts."""
    cfg = _config(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    bound = _parse_as_of(as_of)
    summary = _execute(lambda: _projection_summary(cfg, bound))
    typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


@projections_app.command("status")
def projections_status(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print the projections' counts and positions against the streams' last sequences."""
    cfg = _config(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    summary = _execute(lambda: _projection_summary(cfg, None))
    summary["up_to_date"] = all(
        summary["position"].get(k, 0) == v for k, v in summary["stream_last_seq"].items()
    )
    typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


# -- streams ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _jetstream(cfg: ConvergeConfig) -> AsyncIterator[Any]:
    from events.connection import connect_nats

    async with _broker(cfg) as url:
        await _preflight(url)
        broker = cfg.broker_config(url).model_copy(update={"allow_reconnect": False})
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SEC):
                nc = await connect_nats(broker)
        except TimeoutError:
            raise ConvergeError(
                f"cannot reach NATS at {url} within {CONNECT_TIMEOUT_SEC:g}s; check the URL"
            ) from None
        try:
            yield nc.jetstream()
        finally:
            await nc.close()


def _stream_row(info: Any) -> dict[str, Any]:
    state = info.state
    return {
        "name": info.config.name,
        "subjects": list(info.config.subjects or []),
        "messages": state.messages,
        "bytes": state.bytes,
        "first_seq": state.first_seq,
        "last_seq": state.last_seq,
        "replicas": info.config.num_replicas,
    }


@streams_app.command("ls")
def streams_ls(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    all_streams: Annotated[
        bool, typer.Option("--all", help="Every stream, not only the namespace's.")
    ] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """List the namespace's streams: name, messages, bytes, sequences."""
    cfg = _config(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    prefix = cfg.namespace.upper() + "_"

    async def go() -> list[dict[str, Any]]:
        async with _jetstream(cfg) as js:
            infos = await js.streams_info()
        return [_stream_row(i) for i in infos if all_streams or i.config.name.startswith(prefix)]

    rows = _execute(go)
    if not rows:
        typer.echo(f"no streams in namespace {cfg.namespace!r}", err=True)
    for row in sorted(rows, key=lambda r: str(r["name"])):
        typer.echo(
            f"{row['name']:<32} messages={row['messages']:<8} bytes={row['bytes']:<10} "
            f"seq={row['first_seq']}..{row['last_seq']}"
        )


@streams_app.command("info")
def streams_info(
    name: Annotated[str, typer.Argument(help="Stream name or kind (tasks, pools, ...).")],
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print one stream's configuration and state as JSON."""
    cfg = _config(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    from events.subjects import stream_name

    full = name if "_" in name and name.upper() == name else None
    if full is None:
        _check_kind(name)
        full = stream_name(cfg.namespace, name)

    async def go() -> dict[str, Any]:
        async with _jetstream(cfg) as js:
            try:
                info = await js.stream_info(full)
            except Exception as exc:
                if type(exc).__name__ == "NotFoundError":
                    raise ConvergeError(f"no stream {full!r}; see `converge streams ls`") from None
                raise
        row = _stream_row(info)
        row["config"] = {
            "retention": str(info.config.retention),
            "storage": str(info.config.storage),
            "max_age": info.config.max_age,
            "duplicate_window": info.config.duplicate_window,
        }
        return row

    row = _execute(go)
    typer.echo(orjson.dumps(row, option=orjson.OPT_INDENT_2, default=str).decode())


# -- server ----------------------------------------------------------------------


@app.command()
def server(
    config: ConfigOpt = None,
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", min=0, max=65535, help="Client port (default 4222, 0: any)."),
    ] = None,
    host: Annotated[str | None, typer.Option("--host")] = None,
    data_dir: DataDirOpt = None,
    nats_data_dir: Annotated[
        Path | None,
        typer.Option("--nats-data-dir", help="JetStream data (default <data-dir>/nats)."),
    ] = None,
) -> None:
    """Run the embedded nats-server (JetStream) in the foreground until Ctrl-C."""
    cfg = _config(config, host=host, data_dir=data_dir, nats_data_dir=nats_data_dir)
    chosen = port if port is not None else (cfg.port or 4222)  # 0: any free port

    async def go() -> None:
        from events.server import EmbeddedNatsServer

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        embedded = EmbeddedNatsServer(data_dir=cfg.nats_dir, host=cfg.host, port=chosen or None)
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

    _execute(go)


def main() -> None:
    """Run the ``converge`` command line."""
    app()


if __name__ == "__main__":
    main()
