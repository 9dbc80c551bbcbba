"""The ``converge`` command line: run a demo network, replay events, inspect streams.

Commands: ``run``, ``replay``, ``projections rebuild|status``, ``streams ls|info``,
``server``. Without ``--url`` (or ``CONVERGE_NATS_URL``) a command starts an embedded
nats-server on the data directory (``./.converge/nats``), so ``replay`` reads what
``run`` wrote. Bad arguments exit with code 2 and one line on stderr; an unreachable
broker or another runtime failure exits with code 1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import orjson
import typer

from converge._cli import agents as _agents
from converge._cli import broker, inspect
from converge._cli.agents import make_transports as _transports  # noqa: F401 (kept importable)
from converge._cli.common import check_kind, execute, parse_as_of, parse_time, setup, usage_error

__all__ = ["app", "main"]

logger = logging.getLogger(__name__)

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

CONNECT_TIMEOUT_SEC = broker.CONNECT_TIMEOUT_SEC

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
    cfg = setup(
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
    summary = execute(lambda: _agents.run(cfg, duration, quiet))
    typer.echo(orjson.dumps(summary).decode())


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
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    if start_seq is not None and end_seq is not None and end_seq < start_seq:
        usage_error(f"--end-seq {end_seq} is before --start-seq {start_seq}")
    if subject is not None and stream is None:
        stream = subject.split(".", 1)[0]
    if stream is not None:
        check_kind(stream)
    t0 = parse_time(start_time, "--start-time") if start_time is not None else None
    t1 = parse_time(end_time, "--end-time") if end_time is not None else None
    execute(
        lambda: inspect.replay_events(
            cfg,
            stream=stream,
            subject=subject,
            start_seq=start_seq,
            end_seq=end_seq,
            start_time=t0,
            end_time=t1,
            limit=limit,
        )
    )


# -- projections -----------------------------------------------------------------


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
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    bound = parse_as_of(as_of)
    summary = execute(lambda: inspect.projection_summary(cfg, bound))
    typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


@projections_app.command("status")
def projections_status(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print the projections' counts and positions against the streams' last sequences."""
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    summary = execute(lambda: inspect.projection_summary(cfg, None))
    summary["up_to_date"] = all(
        summary["position"].get(k, 0) == v for k, v in summary["stream_last_seq"].items()
    )
    typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


# -- streams ---------------------------------------------------------------------


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
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    rows = execute(lambda: inspect.list_streams(cfg, all_streams))
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
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    from events.subjects import stream_name

    full = name if "_" in name and name.upper() == name else None
    if full is None:
        check_kind(name)
        full = stream_name(cfg.namespace, name)
    row = execute(lambda: inspect.stream_details(cfg, full))
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
    cfg = setup(config, host=host, data_dir=data_dir, nats_data_dir=nats_data_dir)
    chosen = port if port is not None else (cfg.port or 4222)  # 0: any free port
    execute(lambda: broker.serve(cfg, chosen))


def main() -> None:
    """Run the ``converge`` command line."""
    app()


if __name__ == "__main__":
    main()
