"""ProjectionRunner: drive a projection from an event log; catch up, follow, rebuild.

Over 400 lines on purpose: one state machine (catch-up, live follow, gap fill, acks,
rebuild) whose paths share one lock and one position; snapshots live in
:mod:`projections.snapshots`.

The runner feeds a :class:`~projections.base.Projection` in stream order:

* ``start()``: restore the last snapshot (when a snapshot store is given and the
  projection is empty), check it against the streams, catch up with
  ``EventLog.read`` and follow with ``EventLog.subscribe(start_seq=position + 1)``;
  it returns once the subscriptions are live.
* ``rebuild(as_of=None)``: empty the projection and read it back, to the end or as
  of a sequence (``int``, per stream, inclusive) or a time (``float``, Unix seconds,
  inclusive). A historical rebuild stops following; ``start()`` resumes from there.
* ``apply_ack(recorded)``: apply an append acknowledgement now (read-your-writes).
  Events are applied exactly once: anything at or below a stream's position is a
  no-op, and an event beyond ``position + 1`` first makes the runner read the missing
  range from the log (gap safety).
* ``sync(timeout=...)``: wait until every stream's last sequence, as of the call, is
  applied.

Failures of the background subscription are kept and re-raised by ``sync()``,
``apply_ack()``, ``stop()`` and ``async with``. Snapshots (orjson of
``projection.snapshot()``) are written every ``snapshot_every`` applied events and on
``stop()``, under the key ``projections.<name>.<namespace>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Generic, Self, TypeVar

from converge.core.store import AsyncStore, Store
from converge.errors import (
    ConfigError,
    ConvergeTimeoutError,
    NotStartedError,
    StreamMismatchError,
)
from events import EventLog, RecordedEvent, Subscription
from projections.base import Projection
from projections.snapshots import SnapshotKeeper
from projections.verify import SignatureVerifier

__all__ = ["AsOf", "ProjectionRunner", "RunnerState"]

logger = logging.getLogger(__name__)

P = TypeVar("P", bound=Projection)

AsOf = int | float | Mapping[str, int] | None
"""A rebuild bound: a sequence (``int``, per stream), a time (``float``) or per-stream ints."""


class RunnerState(enum.StrEnum):
    """Lifecycle of a :class:`ProjectionRunner`."""

    IDLE = "idle"  # not following (new, stopped, or frozen by a historical rebuild)
    RUNNING = "running"
    FAILED = "failed"


class ProjectionRunner(Generic[P]):
    """Feed ``projection`` from ``event_log``: catch up, follow live, rebuild, snapshot.

    ``snapshot_store`` (a ``Store`` or ``AsyncStore``) keeps snapshots so a restart
    resumes instead of replaying everything; ``snapshot_every`` applied events trigger
    one (and ``stop()`` writes a last one). ``resync_grace_sec`` is how long a gap may
    wait for the subscription to fill it before the runner reads the range itself.
    ``start_timeout_sec`` bounds ``start()``. With ``pause_gc`` (the default) the
    cyclic garbage collector is paused while a catch-up or rebuild reads the log in
    bulk (it allocates many long-lived objects, which the collector would scan over
    and over); it is re-enabled when the read ends, also on errors. With a ``verifier``
    (:class:`~projections.verify.SignatureVerifier`) every event is checked first, in
    every path (catch-up, live, acknowledgements, rebuild); a rejected event is not
    applied but its sequence counts as passed, and ``rejected_events`` counts it.
    """

    def __init__(
        self,
        projection: P,
        event_log: EventLog,
        *,
        snapshot_store: Store | AsyncStore | None = None,
        snapshot_every: int = 10_000,
        snapshot_key: str | None = None,
        resync_grace_sec: float = 0.1,
        start_timeout_sec: float = 30.0,
        pause_gc: bool = True,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        if not isinstance(projection, Projection):
            raise ConfigError(f"projection must be a Projection, got {type(projection).__name__}")
        if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int):
            raise ConfigError(f"snapshot_every must be an int, got {snapshot_every!r}")
        if snapshot_every < 1:
            raise ConfigError(f"snapshot_every must be >= 1, got {snapshot_every}")
        self._projection = projection
        self._log = event_log
        self._snapshots = SnapshotKeeper(
            projection,
            snapshot_store,
            key=snapshot_key or f"projections.{projection.key}.{event_log.namespace}",
            namespace=event_log.namespace,
            every=snapshot_every,
        )
        self._grace = max(0.0, float(resync_grace_sec))
        self._start_timeout = float(start_timeout_sec)
        self._pause_gc = bool(pause_gc)
        if verifier is not None and not isinstance(verifier, SignatureVerifier):
            raise ConfigError(
                f"verifier must be a SignatureVerifier, got {type(verifier).__name__}"
            )
        self._verifier = verifier
        self.rejected_events = 0
        self._state = RunnerState.IDLE
        self._lock = asyncio.Lock()
        self._progress = asyncio.Event()
        self._watched = False  # someone waits on _progress: the next change must set it
        self._subscriptions: list[Subscription] = []
        self._failure: BaseException | None = None
        self._restored = False
        self.applied_events = 0
        self.resyncs = 0
        self._listeners: list[Callable[[RecordedEvent], None]] = []
        self._calls: tuple[Callable[[RecordedEvent], None], ...] = ()  # _listeners, to call
        # applied events after which a snapshot may be due (None: no snapshot store)
        self._snapshot_due = snapshot_every if self._snapshots.enabled else None
        self._seen: dict[str, int] = {}  # highest sequence known stored, per stream

    # -- properties --------------------------------------------------------------------

    @property
    def projection(self) -> P:
        """The projection this runner feeds."""
        return self._projection

    @property
    def event_log(self) -> EventLog:
        """The event log read from."""
        return self._log

    @property
    def state(self) -> RunnerState:
        """Idle, running (following live) or failed."""
        return self._state

    @property
    def is_running(self) -> bool:
        """Whether the runner follows the streams live."""
        return self._state is RunnerState.RUNNING

    @property
    def position(self) -> dict[str, int]:
        """A copy of the last applied sequence per stream."""
        return dict(self._projection.position)

    @property
    def name(self) -> str:
        """The projection's name."""
        return self._projection.name

    @property
    def lag(self) -> int:
        """Events known to be stored (acks, deliveries, syncs) but not applied yet."""
        position = self._projection.position
        return sum(max(0, seen - position.get(stream, 0)) for stream, seen in self._seen.items())

    def _saw(self, stream: str, sequence: int) -> None:
        if sequence > self._seen.get(stream, 0):
            self._seen[stream] = sequence

    @property
    def snapshot_key(self) -> str:
        """The store key snapshots are written under."""
        return self._snapshots.key

    @property
    def restored_from_snapshot(self) -> bool:
        """Whether the last ``start()`` began from a stored snapshot."""
        return self._restored

    @property
    def failure(self) -> BaseException | None:
        """The background failure that stopped the runner, if any."""
        return self._failure

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Restore, catch up and follow; return once live. Idempotent.

        Raises ``StreamMismatchError`` when a stream ends before the restored position
        (the stream was purged or recreated: delete the snapshot or ``rebuild()``),
        ``ConvergeTimeoutError`` when the subscriptions are not live within
        ``start_timeout_sec`` (the catch-up read before them is not bounded: it raises
        when the log stalls), and a stored background failure.
        """
        self._raise_failure()
        if self._state is RunnerState.RUNNING:
            return
        async with self._lock:
            self._restored = False
            if self._projection.is_empty:
                self._restored = await self._snapshots.restore()
            await self._check_streams()
            with self._bulk():  # as long as it takes; the log raises when reading stalls
                for stream in self._projection.streams:
                    await self._read_range(stream, start=None, end=None)
        try:
            async with asyncio.timeout(self._start_timeout):
                self._state = RunnerState.RUNNING  # deliveries count from here on
                for stream in self._projection.streams:
                    subscription = await self._log.subscribe(
                        self._on_event,
                        stream=stream,
                        subject=self._projection.filters.get(stream),
                        start_seq=self._projection.position[stream] + 1,
                    )
                    # what acknowledgements applied already is passed over undecoded
                    subscription.applied_through = functools.partial(self._applied, stream)
                    self._subscriptions.append(subscription)
                for subscription in self._subscriptions:
                    await subscription.wait_caught_up(self._start_timeout)
        except TimeoutError as exc:
            await self._unsubscribe()
            self._state = RunnerState.IDLE
            raise ConvergeTimeoutError(
                f"{self._name} did not catch up within {self._start_timeout}s "
                f"(at {self._projection.position}); raise start_timeout_sec or check the broker"
            ) from exc
        except BaseException:
            await self._unsubscribe()
            if self._state is RunnerState.RUNNING:
                self._state = RunnerState.IDLE
            raise
        await self._maybe_snapshot()
        logger.info(
            "%s following %s from %s",
            self._name,
            ", ".join(self._projection.streams),
            self._projection.position,
        )

    async def stop(self) -> None:
        """Stop following, write a last snapshot, and re-raise a background failure.

        Idempotent. No snapshot is written after a failure.
        """
        await self._unsubscribe()
        if self._state is RunnerState.RUNNING:
            self._state = RunnerState.IDLE
        if self._failure is None and self._snapshots.pending:
            await self.save_snapshot()
        self._raise_failure()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.stop()
        else:  # keep the body's error; the runner's failure is logged already
            with contextlib.suppress(Exception):
                await self.stop()

    # -- reading -----------------------------------------------------------------------

    async def rebuild(self, as_of: AsOf = None) -> P:
        """Empty the projection and replay the streams, to the end or as of a bound.

        ``as_of``: ``None`` (everything), an ``int`` stream sequence (inclusive, for
        each stream), a ``float`` time in Unix seconds (inclusive), or a mapping of
        stream kind to sequence. A running runner keeps following after a full rebuild
        and stops following after a historical one (``start()`` resumes from there).
        Returns the projection. Raises ``ConfigError`` for a bad bound.
        """
        self._raise_failure()
        end_seq, end_time = self._bounds(as_of)
        if as_of is not None:
            await self._unsubscribe()
            if self._state is RunnerState.RUNNING:
                self._state = RunnerState.IDLE
        async with self._lock:
            self._projection.reset()
            with self._bulk():
                for stream in self._projection.streams:
                    await self._read_range(
                        stream, start=None, end=end_seq.get(stream), end_time=end_time, fill=False
                    )
            self._notify()
        logger.info("%s rebuilt as of %r: %s", self._name, as_of, self._projection.position)
        return self._projection

    def add_listener(self, listener: Callable[[RecordedEvent], None]) -> None:
        """Call ``listener(recorded)`` after each live event or ack changes the projection.

        Listeners run inline and must not block; one that raises is logged and kept.
        Catch-up and rebuild reads do not call them.
        """
        self._listeners.append(listener)
        self._calls = tuple(self._listeners)

    def remove_listener(self, listener: Callable[[RecordedEvent], None]) -> None:
        """Stop calling ``listener``; no-op when it was not added."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)
        self._calls = tuple(self._listeners)

    async def apply_ack(self, recorded: RecordedEvent) -> bool:
        """Apply an append acknowledgement exactly once; return whether it was new.

        Events before it that were not applied yet (a gap) are read from the log
        first, so the projection stays a prefix of each stream. Re-raises a stored
        background failure.
        """
        self._saw(recorded.stream, recorded.sequence)
        self._raise_failure()
        stream = recorded.stream
        position = self._projection.position.get(stream)
        if position is None or recorded.sequence <= position:
            return False
        if (
            recorded.sequence > position + 1
            and self._state is RunnerState.RUNNING
            and stream not in self._projection.filters  # filtered: sequences have holes
        ):
            await self._wait_position(stream, recorded.sequence - 1, self._grace)
            position = self._projection.position[stream]
        if recorded.sequence == position + 1 and not self._lock.locked():
            # the next event and nobody reading a range: no await, so no lock needed
            applied = self._apply_one(recorded)
        else:
            async with self._lock:
                applied = await self._apply_in_order(recorded)
        due = self._snapshot_due
        if due is not None and self._snapshots.pending >= due:
            await self._maybe_snapshot()
        return applied

    def apply_now(self, records: Iterable[RecordedEvent]) -> int:
        """Apply events the caller read without awaiting (in stream order); return the new ones.

        For logs that can read without waiting (a store-backed log on a synchronous
        store): plain queries call it so they see what other writers stored. Events at
        or below the position are no-ops, as everywhere; checks and listeners apply.
        """
        self._raise_failure()
        applied = 0
        for recorded in records:
            position = self._projection.position.get(recorded.stream)
            if position is None or recorded.sequence <= position:
                continue
            if self._verifier is not None and not self._verifier.check(recorded):
                self._skip_rejected(recorded)
                continue
            if self._projection.apply(recorded):
                applied += 1
                for listener in self._calls:
                    try:
                        listener(recorded)
                    except Exception:  # a listener never stops the projection
                        logger.exception("%s: listener %r failed", self._name, listener)
        if applied:
            self.applied_events += applied
            self._snapshots.pending += applied
            self._notify()
        return applied

    async def sync(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until every stream's current last sequence is applied.

        Raises ``NotStartedError`` when not running, ``StreamMismatchError`` when a
        stream ends before the position, ``ConvergeTimeoutError`` after ``timeout``
        seconds, and a stored background failure.
        """
        self._raise_failure()
        if self._state is not RunnerState.RUNNING:
            raise NotStartedError(f"{self._name} is not running; call start() first")
        try:
            async with asyncio.timeout(timeout):
                for stream in self._projection.streams:
                    # The position before the query: the subscription may apply newer
                    # events while it runs, which must not look like a shorter stream.
                    position = self._projection.position[stream]
                    wanted = self._projection.filters.get(stream)
                    last = await self._log.last_sequence(stream=stream, subject=wanted)
                    if wanted is None:
                        self._saw(stream, last)
                    if last < position and wanted is None:
                        raise self._mismatch(stream, last, position)
                    if last > position:
                        await self.wait_for(stream, last, timeout=None)
        except TimeoutError as exc:
            self._raise_failure()
            raise ConvergeTimeoutError(
                f"{self._name} did not sync within {timeout}s (at {self._projection.position})"
            ) from exc
        self._raise_failure()

    async def wait_for(
        self,
        stream: str,
        sequence: int,
        *,
        timeout: float | None = 10.0,  # noqa: ASYNC109
    ) -> None:
        """Wait until ``stream`` is applied up to ``sequence`` (reading the log if slow).

        Raises ``ConvergeTimeoutError`` after ``timeout`` seconds (``None``: no bound of
        its own) and a stored background failure.
        """
        if stream not in self._projection.position:
            raise ConfigError(f"{self._name} does not read stream {stream!r}")
        try:
            async with asyncio.timeout(timeout):
                if self._state is RunnerState.RUNNING:
                    await self._wait_position(stream, sequence, self._grace)
                self._raise_failure()
                if self._projection.position[stream] < sequence:
                    async with self._lock:
                        position = self._projection.position[stream]
                        if position < sequence:
                            self.resyncs += 1
                            await self._read_range(stream, start=position + 1, end=sequence)
                            self._notify()
        except TimeoutError as exc:
            raise ConvergeTimeoutError(
                f"{self._name} did not reach {stream!r} sequence {sequence} within {timeout}s"
            ) from exc
        await self._maybe_snapshot()

    # -- snapshots ---------------------------------------------------------------------

    async def save_snapshot(self) -> bool:
        """Write a snapshot now; return ``False`` when there is no snapshot store."""
        return await self._snapshots.save()

    async def _maybe_snapshot(self) -> None:
        if self._failure is None:
            await self._snapshots.maybe_save()

    # -- internals ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _bulk(self) -> Iterator[None]:
        """Pause the cyclic garbage collector for a bulk read (when enabled and asked to)."""
        paused = self._pause_gc and gc.isenabled()
        if paused:
            gc.disable()
        try:
            yield
        finally:
            if paused:
                gc.enable()

    @property
    def _name(self) -> str:
        return f"projection {self._projection.name!r}"

    def _mismatch(self, stream: str, last: int, position: int) -> StreamMismatchError:
        return StreamMismatchError(
            f"stream {stream!r} of namespace {self._log.namespace!r} ends at sequence {last} "
            f"but {self._name} is at {position} "
            f"(snapshot {self._snapshots.key!r}): the stream was purged or recreated; delete "
            "the snapshot or rebuild() the projection"
        )

    async def _check_streams(self) -> None:
        for stream in self._projection.streams:
            position = self._projection.position[stream]
            if position:
                last = await self._log.last_sequence(stream=stream)
                if last < position:
                    raise self._mismatch(stream, last, position)

    def _bounds(self, as_of: AsOf) -> tuple[dict[str, int], float | None]:
        streams = self._projection.streams
        if as_of is None:
            return {}, None
        if isinstance(as_of, bool):
            raise ConfigError("as_of must be an int sequence, a float time or a mapping")
        if isinstance(as_of, int):
            if as_of < 0:
                raise ConfigError(f"as_of sequence must be >= 0, got {as_of}")
            return dict.fromkeys(streams, as_of), None
        if isinstance(as_of, float):
            return {}, as_of
        if isinstance(as_of, Mapping):
            bounds: dict[str, int] = {}
            for stream, seq in as_of.items():
                if stream not in streams:
                    raise ConfigError(
                        f"as_of names stream {stream!r}; {self._name} reads {streams}"
                    )
                if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
                    raise ConfigError(f"as_of[{stream!r}] must be an int >= 0, got {seq!r}")
                bounds[stream] = seq
            return bounds, None
        raise ConfigError(
            f"as_of must be None, an int sequence, a float Unix time or a mapping, "
            f"got {type(as_of).__name__}"
        )

    async def _read_range(
        self,
        stream: str,
        *,
        start: int | None,
        end: int | None,
        end_time: float | None = None,
        fill: bool = True,
    ) -> None:
        """Apply ``stream``'s events after the position up to ``end`` (lock held).

        With ``fill`` and an ``end``, the position moves to ``end`` afterwards: the range
        was read completely, so missing sequences (deleted messages) are skipped.
        """
        projection = self._projection
        first = projection.position[stream] + 1 if start is None else start
        if end is not None and end < first:
            return
        if end == 0:
            return
        apply = projection.apply
        count = 0
        records = self._log.read(
            stream=stream,
            subject=projection.filters.get(stream),
            start_seq=first,
            end_seq=end,
            end_time=end_time,
        )
        if self._verifier is None:
            async for recorded in records:
                if apply(recorded):
                    count += 1
        else:
            check = self._verifier.check
            async for recorded in records:
                if check(recorded):
                    if apply(recorded):
                        count += 1
                else:
                    self._skip_rejected(recorded)
        if fill and end is not None:
            projection.advance(stream, end)
        self.applied_events += count
        self._snapshots.pending += count

    async def _apply_in_order(self, recorded: RecordedEvent, *, delivered: bool = False) -> bool:
        """Apply one event after filling any gap before it (lock held).

        On a filtered stream the sequences between two matching events are other
        subjects': an event ``delivered`` by the (ordered, filtered) subscription has
        every earlier match applied already, and an acknowledgement reads the matches
        it jumps over quietly.
        """
        stream = recorded.stream
        position = self._projection.position.get(stream)
        if position is None or recorded.sequence <= position:
            return False
        if stream in self._projection.filters:
            if not delivered and recorded.sequence > position + 1:
                await self._read_range(stream, start=position + 1, end=recorded.sequence - 1)
        elif recorded.sequence > position + 1:
            self.resyncs += 1
            logger.warning(
                "%s saw %s seq %d at position %d; reading the gap from the log",
                self._name,
                stream,
                recorded.sequence,
                position,
                extra={"stream": stream, "seq": recorded.sequence},
            )
            await self._read_range(stream, start=position + 1, end=recorded.sequence - 1)
        return self._apply_one(recorded)

    def _apply_one(self, recorded: RecordedEvent) -> bool:
        """Check, apply and announce one event whose predecessors are applied (lock held)."""
        if self._verifier is not None and not self._verifier.check(recorded):
            self._skip_rejected(recorded)
            self._notify()
            return False
        applied = self._projection.apply(recorded)
        if applied:
            self.applied_events += 1
            self._snapshots.pending += 1
            for listener in self._calls:
                try:
                    listener(recorded)
                except Exception:  # a listener never stops the projection
                    logger.exception("%s: listener %r failed", self._name, listener)
        self._notify()
        return applied

    def _skip_rejected(self, recorded: RecordedEvent) -> None:
        """Pass over a rejected event: its sequence counts as read, nothing is applied.

        The subject's version moves too: the log's last sequence of that subject is the
        rejected event, so the next command on the entity must expect it.
        """
        self.rejected_events += 1
        why = "signature rejected"
        if self._verifier is not None and self._verifier.recent:
            why = f"{why}: {self._verifier.recent[-1].reason}"
        self._projection.pass_over(recorded.stream, recorded.subject, recorded.sequence, why)

    def _applied(self, stream: str) -> int:
        """The position of ``stream``: every event up to it is applied (or passed over)."""
        return self._projection.position.get(stream, 0)

    async def _on_event(self, recorded: RecordedEvent) -> None:
        if self._failure is not None or self._state is not RunnerState.RUNNING:
            return
        stream = recorded.stream
        sequence = recorded.sequence
        if sequence > self._seen.get(stream, 0):
            self._seen[stream] = sequence
        position = self._projection.position.get(stream)
        if position is None or sequence <= position:
            return
        try:
            if sequence == position + 1 and not self._lock.locked():
                # the next event and nobody reading a range: no await, so no lock needed
                self._apply_one(recorded)
            else:
                async with self._lock:
                    await self._apply_in_order(recorded, delivered=True)
            due = self._snapshot_due
            if due is not None and self._snapshots.pending >= due:
                await self._maybe_snapshot()
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            logger.error("%s failed and stopped following: %r", self._name, exc)
        self._state = RunnerState.FAILED
        self._notify()

    def _raise_failure(self) -> None:
        if self._failure is None:
            for subscription in self._subscriptions:
                if subscription.error is not None:  # the backend gave up on delivery
                    self._fail(subscription.error)
                    break
        if self._failure is not None:
            raise self._failure

    def _notify(self) -> None:
        if self._watched:  # a new Event per applied event only while someone waits
            self._watched = False
            self._progress.set()
            self._progress = asyncio.Event()

    async def _wait_position(self, stream: str, sequence: int, grace: float) -> None:
        """Wait up to ``grace`` seconds for the subscription to reach ``sequence``."""
        deadline = time.monotonic() + grace
        while self._projection.position[stream] < sequence and self._failure is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._state is not RunnerState.RUNNING:
                return
            progress = self._progress
            self._watched = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await progress.wait()

    async def _unsubscribe(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            try:
                await subscription.stop()
            except Exception as exc:  # the handler never raises; this is the backend's
                logger.warning("%s: subscription stopped with %r", self._name, exc)
                if self._failure is None:
                    self._failure = exc
