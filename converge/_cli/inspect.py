"""Read-only commands' work: replay events, summarise projections, describe streams."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from converge._cli.broker import event_log
from converge._cli.common import one_line
from converge._cli.output import ProgressReporter
from converge.config import ConvergeConfig
from converge.errors import ConvergeError, NotFoundError
from events import EventLog, JetStreamEventLog, RecordedEvent
from events.jetstream import StreamStatus

__all__ = [
    "jsonable",
    "list_streams",
    "projection_summary",
    "replay_events",
    "stream_details",
    "stream_row",
]


def jsonable(recorded: RecordedEvent, *, headers: bool = False) -> dict[str, Any]:
    """Return one recorded event as a JSON-ready dict (position, envelope and data).

    With ``headers`` the stored NATS headers (``traceparent``, ids...) are included.
    """
    event = recorded.event
    row = {
        "stream": recorded.stream,
        "subject": recorded.subject,
        "seq": recorded.sequence,
        "time": recorded.time,
        "type": event.type,
        "version": event.version,
        "id": event.id,
        "actor": event.actor,
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "data": event.payload(),
    }
    if headers:
        row["headers"] = dict(recorded.headers or {})
    return row


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
    follow: bool = False,
    headers: bool = False,
) -> int:
    """Print the selected events as JSON lines; return how many were printed.

    With ``follow`` keep printing new events (of ``stream``, or of every known stream)
    until SIGINT/SIGTERM.
    """
    count = 0

    def emit(recorded: RecordedEvent) -> None:
        sys.stdout.write(orjson.dumps(jsonable(recorded, headers=headers), default=str).decode())
        sys.stdout.write("\n")
        sys.stdout.flush()

    async with event_log(cfg, read_only=True) as log:
        if follow:
            return await _follow(log, emit, stream, subject, start_seq, start_time)
        async for recorded in log.read(
            stream=stream,
            subject=subject,
            start_seq=start_seq,
            end_seq=end_seq,
            start_time=start_time,
            end_time=end_time,
        ):
            emit(recorded)
            count += 1
            if limit is not None and count >= limit:
                break
    return count


async def _follow(
    log: EventLog,
    emit: Callable[[RecordedEvent], None],
    stream: str | None,
    subject: str | None,
    start_seq: int | None,
    start_time: float | None,
) -> int:
    """Print ``stream``'s (or every known stream's) events, then new ones, until a signal."""
    from events.subjects import KNOWN_KINDS

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    count = 0

    async def handler(recorded: RecordedEvent) -> None:
        nonlocal count
        if start_time is not None and recorded.time < start_time:
            return
        emit(recorded)
        count += 1

    subscriptions = []
    try:
        for kind in [stream] if stream is not None else list(KNOWN_KINDS):
            subscriptions.append(
                await log.subscribe(handler, stream=kind, subject=subject, start_seq=start_seq or 1)
            )
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        for sub in subscriptions:
            await sub.stop()
    return count


async def projection_summary(
    cfg: ConvergeConfig,
    as_of: int | float | None,
    *,
    progress: bool = True,
    live: bool = False,
) -> dict[str, Any]:
    """Rebuild the task and pool projections (up to ``as_of``) and summarise them.

    ``as_of``: an int stream sequence (each stream) or a float Unix time. With
    ``progress`` a bar with rate and ETA shows on stderr while events are folded.
    With ``live`` the summary adds the positions running processes report
    (:func:`live_positions`).
    """
    from converge.security import EventSecurity
    from projections import PoolProjection, TaskProjection

    tasks = TaskProjection()
    pools = PoolProjection()
    security = EventSecurity(verify=cfg.verify, require=False, trusted=frozenset())
    async with event_log(cfg, read_only=True) as log:
        await security.load_policy(log, record=False, trusted_signers=cfg.trusted_signers)
        check = security.verifier() or (lambda _recorded: True)
        skipped: dict[str, int] = {}  # per stream: undecodable messages and misfit events
        last = {kind: await log.last_sequence(stream=kind) for kind in ("tasks", "pools")}
        end_seq = as_of if isinstance(as_of, int) else None
        end_time = as_of if isinstance(as_of, float) else None
        total: int | None = sum(
            min(n, end_seq) if end_seq is not None else n for n in last.values()
        )
        if end_time is not None:
            total = None  # unknown until read
        done = 0
        with ProgressReporter("rebuilding", total, quiet=not progress) as bar:
            for projection, kind in ((tasks, "tasks"), (pools, "pools")):
                before = log.skipped_events
                if end_seq != 0 and last[kind] != 0:
                    async for recorded in log.read(stream=kind, end_seq=end_seq, end_time=end_time):
                        if check(recorded):
                            projection.apply(recorded)
                        else:  # refused by the verifier: counted in "signatures"
                            projection.pass_over(
                                kind, recorded.subject, recorded.sequence, "signature rejected"
                            )
                        done += 1
                        if done % 500 == 0:
                            bar.update(done)
                undecodable = log.skipped_events - before
                skipped[kind] = undecodable + projection.skipped_by_stream.get(kind, 0)
            bar.update(done, done)
        processes = await live_positions(log) if live else None
    summary: dict[str, Any] = {
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
        "signatures": security.summary(),
    }
    if processes is not None:
        summary["processes"] = processes
        if not processes:
            summary["processes_note"] = "no running process reports its projection positions"
    return summary


async def live_positions(log: EventLog) -> list[dict[str, Any]]:
    """Per reporting process and projection: position, stream ends, lag, report age, state.

    ``state`` is ``live``, ``stale`` (no report for three reporting intervals: the
    process hangs or died without stopping) or ``stopped``. Reads only.
    """
    from converge.observability.positions import read_positions

    nc = getattr(log, "connection", None)
    if nc is None:
        return []
    now = time.time()
    ends: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    for report in await read_positions(nc, log.namespace):
        position = report.get("position")
        if not isinstance(position, dict):
            continue
        last: dict[str, int] = {}
        for stream in position:
            if stream not in ends:
                try:
                    ends[stream] = await log.last_sequence(stream=stream)
                except ConvergeError:
                    ends[stream] = 0
            last[stream] = ends[stream]
        at = float(report.get("at", 0.0) or 0.0)  # type: ignore[arg-type]
        interval = float(report.get("interval_sec", 5.0) or 5.0)  # type: ignore[arg-type]
        age = max(0.0, now - at)
        state = "stopped" if report.get("stopped") else "stale" if age > 3 * interval else "live"
        out.append(
            {
                "process": report.get("process"),
                "host": report.get("host"),
                "pid": report.get("pid"),
                "projection": report.get("projection"),
                "position": position,
                "stream_last_seq": last,
                "lag": sum(max(0, last[k] - int(v)) for k, v in position.items()),
                "report_age_sec": round(age, 1),
                "state": state,
            }
        )
    return out


def _jetstream(log: EventLog) -> JetStreamEventLog:
    if not isinstance(log, JetStreamEventLog):  # pragma: no cover - the CLI opens JetStream
        raise ConvergeError(f"stream inspection needs a JetStream event log, not {log!r}")
    return log


def stream_row(status: StreamStatus) -> dict[str, Any]:
    """Return a stream's name, subjects, counts and sequences."""
    return {
        "name": status.name,
        "subjects": list(status.subjects),
        "messages": status.messages,
        "bytes": status.bytes,
        "first_seq": status.first_seq,
        "last_seq": status.last_seq,
        "replicas": status.replicas,
    }


async def list_streams(cfg: ConvergeConfig, all_streams: bool) -> list[dict[str, Any]]:
    """Return a row per stream of the namespace (every stream with ``all_streams``).

    A namespace with no streams lists nothing (the listing answers "what is there").
    """
    try:
        async with event_log(cfg, read_only=True) as log:
            statuses = await _jetstream(log).streams_info(all_streams=all_streams)
    except NotFoundError:
        return []
    return [stream_row(s) for s in statuses]


async def stream_details(cfg: ConvergeConfig, name: str) -> dict[str, Any]:
    """Return the row of stream ``name`` (a kind or a full name) with its configuration."""
    async with event_log(cfg, read_only=True) as log:
        try:
            status = await _jetstream(log).stream_info(name)
        except NotFoundError as exc:
            raise NotFoundError(f"{one_line(exc)}; see `converge streams ls`") from None
    row = stream_row(status)
    row["config"] = {
        "retention": status.retention,
        "storage": status.storage,
        "max_age": status.max_age_sec,
        "max_msgs": status.max_msgs,
        "max_bytes": status.max_bytes,
        "duplicate_window": status.duplicate_window_sec,
    }
    return row
