"""``ride_out``: which failures of a JetStream API call are retried, for how long, and how
the last one is reported (the broker side is in test_eventlog_cluster.py)."""

from __future__ import annotations

import pytest

from converge.errors import ClosedError, ConvergeTimeoutError, EventLogError, NotFoundError
from events.jetstream.retry import JetStreamUnavailable, ride_out


class Flaky:
    """Fails with ``errors`` in turn, then returns ``"ok"``; counts its calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@pytest.mark.asyncio
async def test_timeouts_and_unavailable_answers_are_retried_until_one_succeeds() -> None:
    call = Flaky(ConvergeTimeoutError("t"), JetStreamUnavailable("503"), ConvergeTimeoutError("t"))
    assert await ride_out("stream info", call, limit_sec=30.0) == "ok"
    assert call.calls == 4


@pytest.mark.asyncio
async def test_a_plain_function_returning_a_coroutine_is_awaited() -> None:
    call = Flaky(ConvergeTimeoutError("t"))
    assert await ride_out("lookup", lambda: call(), limit_sec=30.0) == "ok"


@pytest.mark.asyncio
async def test_other_errors_are_raised_at_once() -> None:
    for error in (NotFoundError("gone"), EventLogError("refused"), ValueError("bad")):
        call = Flaky(error)
        with pytest.raises(type(error)):
            await ride_out("stream info", call, limit_sec=30.0)
        assert call.calls == 1


@pytest.mark.asyncio
async def test_past_the_limit_the_last_error_is_raised_naming_the_limit() -> None:
    call = Flaky(*[ConvergeTimeoutError("no answer")] * 1000)
    with pytest.raises(ConvergeTimeoutError, match=r"stream info: no answer \(retried for 0.3s\)"):
        await ride_out("stream info", call, limit_sec=0.3)
    assert 1 < call.calls < 1000
    call = Flaky(*[JetStreamUnavailable("unavailable")] * 1000)
    with pytest.raises(EventLogError, match="retried for 0.3s") as caught:
        await ride_out("lookup", call, limit_sec=0.3)
    assert not isinstance(caught.value, JetStreamUnavailable)


@pytest.mark.asyncio
async def test_no_limit_means_one_attempt() -> None:
    call = Flaky(ConvergeTimeoutError("t"))
    with pytest.raises(ConvergeTimeoutError):
        await ride_out("stream info", call, limit_sec=0)
    assert call.calls == 1


@pytest.mark.asyncio
async def test_a_closed_log_ends_the_retries() -> None:
    def check_open() -> None:
        raise ClosedError("the log is closed")

    call = Flaky(*[ConvergeTimeoutError("t")] * 1000)
    with pytest.raises(ClosedError):
        await ride_out("stream info", call, limit_sec=30.0, check_open=check_open)
    assert call.calls == 1
