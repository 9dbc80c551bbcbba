# Over 400 lines: every command's Typer signature lives here; the work is in converge/_cli/.
"""The ``converge`` command line: run agents, operate on tasks, inspect the event log.

Commands: ``run``, ``tasks submit|ls|show|wait|cancel|sweep``, ``agents ls``,
``pools ls|show``, ``replay``, ``projections rebuild|status``, ``streams ls|info|update``,
``events schema|asyncapi``, ``server``. Without ``--url`` (or ``CONVERGE_NATS_URL``) a
command starts an embedded nats-server on the data directory (``./.converge/nats``), so
``replay`` reads what ``run`` wrote. Bad arguments exit with code 2 and one line on
stderr; an unreachable broker or another runtime failure exits with code 1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import orjson
import typer

from converge import __version__
from converge._cli import agents as _agents
from converge._cli import broker, inspect
from converge._cli.catalog import events_app
from converge._cli.common import (
    check_kind,
    execute,
    one_line,
    parse_as_of,
    parse_time,
    set_log_format,
    setup,
    usage_error,
    with_metrics,
)
from converge._cli.loader import build_agents, load_specs
from converge._cli.options import ConfigOpt, DataDirOpt, JsonOpt, NamespaceOpt, UrlOpt
from converge._cli.output import print_table
from converge._cli.taskcmds import agents_app, pools_app, tasks_app
from converge.config import AgentSpec
from converge.errors import ConfigError

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
app.add_typer(tasks_app, name="tasks")
app.add_typer(agents_app, name="agents")
app.add_typer(pools_app, name="pools")
app.add_typer(projections_app, name="projections")
app.add_typer(streams_app, name="streams")
app.add_typer(events_app, name="events")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"converge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            help="Logs as text or json (default: CONVERGE_LOG_FORMAT or text).",
        ),
    ] = None,
) -> None:
    """Networks of autonomous agents, event-sourced on NATS JetStream."""
    if log_format is not None and log_format.lower() not in ("text", "json"):
        usage_error(f"--log-format {log_format!r}: use text or json")
    set_log_format(None if log_format is None else log_format.lower())


# -- run -------------------------------------------------------------------------


@app.command()
def run(
    specs: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[SPEC]...",
            help="Agents to serve: package.module:Class or path/to/file.py:Class, "
            "optionally =N copies. None: the demo.",
            show_default=False,
        ),
    ] = None,
    count: Annotated[
        int, typer.Option("--count", min=1, max=256, help="Copies of each SPEC without =N.")
    ] = 1,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    agents: Annotated[
        int | None, typer.Option("--agents", "-n", help="Demo worker agents.", min=1)
    ] = None,
    tasks: Annotated[
        int | None, typer.Option("--tasks", "-t", help="Demo tasks to submit (0: none).", min=0)
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option("--duration", "-d", help="Stop after this many seconds.", min=0.0),
    ] = None,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            min=0.0,
            help="On SIGTERM/Ctrl-C, seconds to finish or release tasks in flight.",
        ),
    ] = 10.0,
    transport: Annotated[
        str | None,
        typer.Option("--transport", help="Agent messaging: local, nats, tcp or websocket."),
    ] = None,
    pool_id: Annotated[str | None, typer.Option("--pool-id", help="Pool of the agents.")] = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port).",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address of the metrics endpoint.")
    ] = "127.0.0.1",
    no_verify: Annotated[
        bool,
        typer.Option(
            "--no-verify",
            help="Trusted single-user setups only: apply every event without checking its "
            "signature or that its signer is the agent it acts for (forged events count). "
            "Events are still signed.",
        ),
    ] = False,
) -> None:
    """Serve your agents (SPEC...), or run the demo until every demo task is done.

    Agents from SPECs (or the config's agents list) serve until SIGTERM/Ctrl-C (which
    drains) or --duration, idle or not.
    """
    cfg = setup(
        config,
        verify=False if no_verify else None,
        nats_url=url,
        agents=agents,
        tasks=tasks,
        transport=transport,
        pool_id=pool_id,
        namespace=namespace,
        data_dir=data_dir,
    )
    chosen: list[str] | list[AgentSpec] | None = list(specs) if specs else None
    if chosen is None and isinstance(cfg.agents, list):
        chosen = cfg.agents
    if chosen is None:
        if cfg.tasks == 0 and duration is None:
            logger.info("no demo tasks: running until interrupted")
        summary = execute(
            with_metrics(metrics_host, metrics_port, _agents.run(cfg, duration, quiet))
        )
    else:
        try:
            built = build_agents(load_specs(chosen, count))
        except ConfigError as exc:
            usage_error(one_line(exc))
        served = _agents.run(cfg, duration, quiet, built, drain_timeout_sec=drain_timeout)
        summary = execute(with_metrics(metrics_host, metrics_port, served))
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
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl-C.")
    ] = False,
    headers: Annotated[
        bool, typer.Option("--headers", help="Include the stored NATS headers (traceparent...).")
    ] = False,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print the events of a stream, subject or range as JSON lines (--follow: live tail)."""
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    if start_seq is not None and end_seq is not None and end_seq < start_seq:
        usage_error(f"--end-seq {end_seq} is before --start-seq {start_seq}")
    if follow and (end_seq is not None or end_time is not None or limit is not None):
        usage_error("--follow prints until Ctrl-C; it takes no --end-seq, --end-time or --limit")
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
            follow=follow,
            headers=headers,
        )
    )


# -- projections -----------------------------------------------------------------


@projections_app.command("rebuild")
def projections_rebuild(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="A time: ISO-8601 (UTC when naive) or @<unix seconds>."),
    ] = None,
    as_of_seq: Annotated[
        int | None, typer.Option("--as-of-seq", help="A stream sequence (each stream).")
    ] = None,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Rebuild the task and pool projections from their streams and print counts."""
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    bound = parse_as_of(as_of, as_of_seq)
    summary = execute(lambda: inspect.projection_summary(cfg, bound, progress=not quiet))
    typer.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


@projections_app.command("status")
def projections_status(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = True,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print what running processes report of their projections: position, lag, report age.

    Also the counts of a rebuild in this process, as ``projections rebuild`` prints them.
    """
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    summary = execute(lambda: inspect.projection_summary(cfg, None, progress=False, live=True))
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
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """List the namespace's streams: name, messages, bytes, sequences."""
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    rows = execute(lambda: inspect.list_streams(cfg, all_streams))
    print_table(
        sorted(rows, key=lambda r: str(r["name"])),
        ("name", "messages", "bytes", "first_seq", "last_seq", "replicas"),
        as_json=as_json,
        empty=f"no streams in namespace {cfg.namespace!r}",
    )


@streams_app.command("info")
def streams_info(
    name: Annotated[str, typer.Argument(help="Stream name or kind (tasks, pools, ...).")],
    url: UrlOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = True,
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


@streams_app.command("update")
def streams_update(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Apply the configured stream settings (replicas...) to the namespace's streams.

    Other commands never change an existing stream; they warn when it differs.
    """
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)

    async def update() -> dict[str, dict[str, tuple[object, object]]]:
        from events import JetStreamEventLog

        async with broker.event_log(cfg) as log:
            assert isinstance(log, JetStreamEventLog)
            return await log.update_streams()

    changed = execute(update)
    for name, drift in sorted(changed.items()):
        shown = ", ".join(f"{k} {a!r} -> {w!r}" for k, (a, w) in sorted(drift.items()))
        typer.echo(f"{name}: {shown or 'up to date'}")


# -- server ----------------------------------------------------------------------


@app.command()
def server(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="A converge config (.yaml/.yml/.toml/.json) or a nats-server config "
            "(any other name, e.g. server.conf: users, TLS, permissions).",
        ),
    ] = None,
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
    nats_conf, config = broker.split_server_config(config)
    cfg = setup(
        config,
        host=host,
        data_dir=data_dir,
        nats_data_dir=nats_data_dir,
        nats_server_config=nats_conf,
    )
    chosen = port if port is not None else (cfg.port or 4222)  # 0: any free port
    execute(lambda: broker.serve(cfg, chosen))


def main() -> None:
    """Run the ``converge`` command line."""
    app()


if __name__ == "__main__":
    main()
