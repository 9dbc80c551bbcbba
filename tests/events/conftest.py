from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

# Rich assertion messages in the shipped contract suite; only possible before its import.
if "events.testing" not in sys.modules:
    pytest.register_assert_rewrite("events.testing")


@pytest.fixture
def drop_delivery(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], list[int]]:
    """``drop_delivery(seq)``: routed deliveries lose the first delivery of stream sequence
    ``seq`` (reads and live subscriptions alike); it returns the list of what was lost."""
    from events.jetstream import rawroute

    def drop(stream_seq: int) -> list[int]:
        dropped: list[int] = []
        original = rawroute.RawRouter.process_msg

        async def lossy(
            self: rawroute.RawRouter,
            sid: int,
            subject: bytes,
            reply: bytes,
            data: bytes,
            headers: bytes,
        ) -> None:
            tokens = reply.split(b".")  # $JS.ACK.<stream>.<consumer>.<n>.<stream seq>...
            if (
                sid in self.routes
                and not dropped
                and len(tokens) == 9
                and int(tokens[5]) == stream_seq
            ):
                dropped.append(stream_seq)
                return
            await original(self, sid, subject, reply, data, headers)

        monkeypatch.setattr(rawroute.RawRouter, "process_msg", lossy)
        return dropped

    return drop
