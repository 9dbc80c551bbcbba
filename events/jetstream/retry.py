"""Riding out a JetStream leader election: API calls retried with backoff, within a limit.

While a cluster elects a new stream or meta leader (a node was killed, restarted or
partitioned), JetStream answers nothing for seconds: API requests time out, or come back
with code 503 ("JetStream system temporarily unavailable"), and a consumer created in
that window can be left without a peer that answers. Every JetStream API call of the
event log (stream info and listing, stream provisioning, message lookups, the creation
of a read's or a subscription's consumer) runs through :func:`ride_out`, which retries
those failures with exponential backoff (0.05 s doubling to 1 s) until
``api_retry_sec`` seconds have passed since the first attempt; then the last error is
raised, naming the limit. Each attempt still has its own ``api_timeout_sec``.

Appends have their own window (``publish_timeout_sec * (publish_retries + 1)``, see
:mod:`events.jetstream.append`). Other errors (a missing stream, a refused config, a
closed connection) are raised at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from converge.errors import ConvergeTimeoutError, EventLogError

__all__ = ["JetStreamUnavailable", "ride_out"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The failures a leader election causes; nats-py's own timeout is mapped by the callers
#: but may reach here from nats-py helpers that raise it directly.
TRANSIENT = (ConvergeTimeoutError, nats.errors.TimeoutError)


class JetStreamUnavailable(EventLogError):
    """JetStream answered 503: temporarily unavailable (an election is under way)."""


async def ride_out(
    what: str,
    call: Callable[[], Awaitable[T]],
    *,
    limit_sec: float,
    check_open: Callable[[], None] = lambda: None,
) -> T:
    """Return ``await call()``, retried on timeouts and 503s for up to ``limit_sec``.

    ``what`` names the call in the retry log lines and the final error; ``check_open``
    runs before each retry and ends them by raising (a stopped log, a closed
    connection). ``limit_sec`` 0 makes one attempt.
    """
    if limit_sec <= 0:
        return await call()

    def before_sleep(state: RetryCallState) -> None:
        check_open()
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "%s: %s; retrying (JetStream leader election?), attempt %d of up to %gs",
            what,
            exc,
            state.attempt_number,
            limit_sec,
        )

    retrying = AsyncRetrying(
        stop=stop_after_delay(limit_sec),
        wait=wait_exponential(multiplier=0.05, min=0.05, max=1.0),
        retry=retry_if_exception_type((*TRANSIENT, JetStreamUnavailable)),
        before_sleep=before_sleep,
        reraise=True,
    )

    async def attempt() -> T:  # tenacity would not await a plain callable's coroutine
        return await call()

    try:
        return await retrying(attempt)
    except TRANSIENT as exc:
        raise ConvergeTimeoutError(f"{what}: {exc} (retried for {limit_sec}s)") from exc
    except JetStreamUnavailable as exc:
        raise EventLogError(f"{what}: {exc} (retried for {limit_sec}s)") from exc
