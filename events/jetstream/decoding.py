"""Decoding stored JetStream messages into records; undecodable ones are skipped and counted."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from converge.errors import DecodeError
from events.base import Event
from events.codec import decode_event
from events.jetstream.connection import LogOptions
from events.log import RecordedEvent, recorded_event

__all__ = ["RecordDecoder"]

logger = logging.getLogger(__name__)


class RecordDecoder:
    """Turn stored messages of one namespace into :class:`RecordedEvent` objects."""

    def __init__(self, opts: LogOptions) -> None:
        self._opts = opts
        self._cut = len(opts.namespace) + 1  # namespace and dot, before the relative subject
        self.skipped = 0

    def decode_msg(
        self,
        kind: str,
        full_subject: str,
        seq: int,
        when: float,
        data: bytes,
        headers: Mapping[str, str] | None,
    ) -> RecordedEvent | None:
        """Decode one stored message; ``None`` (skipped, logged, counted) when undecodable.

        ``headers`` is kept as the record's headers (nats-py builds a new dict per message).
        """
        opts = self._opts
        if type(headers) is dict and type(data) is bytes:
            # the fast path of decode_event, taken here so that it is not tried twice
            event: Event | None = opts.registry.decode_current(data, headers)
            if event is not None:
                return recorded_event(
                    event, kind, full_subject[self._cut :], seq, when, headers, data
                )
        try:
            event = decode_event(data, headers, opts.registry)
        except DecodeError as exc:
            self.skipped += 1
            logger.warning(
                "skipping undecodable message in stream %s seq %d: %s",
                opts.spec(kind).name,
                seq,
                exc,
                extra={"stream": kind, "seq": seq},
            )
            return None
        return recorded_event(
            event, kind, full_subject[self._cut :], seq, when, headers or None, data
        )

    def decode_batch(
        self,
        kind: str,
        subjects: list[str],
        bodies: list[bytes],
        headers: list[dict[str, str] | None],
        seqs: list[int],
        times: list[float],
    ) -> list[RecordedEvent]:
        """Decode deliveries of ``kind``; undecodable ones are skipped (see :meth:`decode_msg`).

        Events stored at their registered version take
        :meth:`EventRegistry.decode_current`; the others the checked path.
        """
        decode_current = self._opts.registry.decode_current
        cut = self._cut
        records: list[RecordedEvent] = []
        append = records.append
        for subject, data, hdrs, seq, when in zip(
            subjects, bodies, headers, seqs, times, strict=True
        ):
            event = decode_current(data, hdrs) if hdrs is not None else None
            if event is not None:
                append(recorded_event(event, kind, subject[cut:], seq, when, hdrs, data))
            else:
                recorded = self.decode_msg(kind, subject, seq, when, data, hdrs)
                if recorded is not None:
                    append(recorded)
        return records
