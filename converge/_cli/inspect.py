"""Read-only commands' work: replay events, summarise projections, describe streams."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import typer

from converge._cli.broker import event_log, jetstream
from converge.config import ConvergeConfig
from converge.errors import ConvergeError
from events import RecordedEvent

__all__ = [
    "jsonable",
    "list_streams",
    "projection_summary",
    "replay_events",
    "stream_details",
    "stream_row",
]


def jsonable(recorded: RecordedEvent) -> dict[str, Any]:
    """Return one recorded event as a JSON-ready dict (position, envelope and data)."""
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


async def replay_events(
    cfg: ConvergeConfig,
    *,
    stream: str | None,
    subject: str | None,
    start_seq: int | None,
    end_seq: int | None,
    start_time: float | None,
    end_time: float | None,
    limit: int | None,
) -> int:
    """Print the selected events as JSON lines; return how many were printed."""
    count = 0
    async with event_log(cfg) as log:
        async for recorded in log.read(
            stream=stream,
            subject=subject,
            start_seq=start_seq,
            end_seq=end_seq,
            start_time=start_time,
            end_time=end_time,
        ):
            typer.echo(orjson.dumps(jsonable(recorded), default=str).decode())
            count += 1
            if limit is not None and count >= limit:
                break
    return count


async def projection_summary(cfg: ConvergeConfig, as_of: int | float | None) -> dict[str, Any]:
    """Rebuild the task and pool projections (up to ``as_of``) and summarise them."""
    from projections import PoolProjection, ProjectionRunner, TaskProjection

    async with event_log(cfg) as log:
        tasks = TaskProjection()
        pools = PoolProjection()
        skipped: dict[str, int] = {}  # per stream: undecodable messages and misfit events
        for kind, projection in (("tasks", tasks), ("pools", pools)):
            before = log.skipped_events
            await ProjectionRunner(projection, log).rebuild(as_of)
            undecodable = log.skipped_events - before
            skipped[kind] = undecodable + projection.skipped_by_stream.get(kind, 0)
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
        "skipped": skipped,
        "recent_skips": [s.to_dict() for p in (tasks, pools) for s in p.recent_skips],
    }


def stream_row(info: Any) -> dict[str, Any]:
    """Return a stream's name, subjects, counts and sequences from its info."""
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


async def list_streams(cfg: ConvergeConfig, all_streams: bool) -> list[dict[str, Any]]:
    """Return a row per stream of the namespace (every stream with ``all_streams``)."""
    prefix = cfg.namespace.upper() + "_"
    async with jetstream(cfg) as js:
        infos = await js.streams_info()
    return [stream_row(i) for i in infos if all_streams or i.config.name.startswith(prefix)]


async def stream_details(cfg: ConvergeConfig, full: str) -> dict[str, Any]:
    """Return the row of stream ``full`` with its main configuration."""
    async with jetstream(cfg) as js:
        try:
            info = await js.stream_info(full)
        except Exception as exc:
            if type(exc).__name__ == "NotFoundError":
                raise ConvergeError(f"no stream {full!r}; see `converge streams ls`") from None
            raise
    row = stream_row(info)
    row["config"] = {
        "retention": str(info.config.retention),
        "storage": str(info.config.storage),
        "max_age": info.config.max_age,
        "duplicate_window": info.config.duplicate_window,
    }
    return row
