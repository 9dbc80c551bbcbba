"""Coordination protocols on a real JetStream server: shared auctions, rebuilds, races."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from converge.coordination.bidding import AuctionType, BiddingProtocol
from converge.coordination.delegation import DelegationProtocol
from converge.coordination.negotiation import NegotiationProtocol
from events import EventLog

pytestmark = pytest.mark.nats


@pytest_asyncio.fixture
async def js_log(nats_url: str, namespace: str) -> AsyncIterator[EventLog]:
    from events import JetStreamEventLog  # type: ignore[attr-defined]

    log: EventLog = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    try:
        yield log
    finally:
        await log.close()


async def _second_log(nats_url: str, namespace: str) -> EventLog:
    from events import JetStreamEventLog  # type: ignore[attr-defined]

    log: EventLog = await JetStreamEventLog.connect(nats_url, namespace=namespace)
    return log


@pytest.mark.asyncio
async def test_two_connections_share_one_auction(
    js_log: EventLog, nats_url: str, namespace: str
) -> None:
    other_log = await _second_log(nats_url, namespace)
    try:
        first = BiddingProtocol(js_log, auction_id="job-7", auction_type=AuctionType.ENGLISH)
        second = BiddingProtocol(other_log, auction_id="job-7", auction_type=AuctionType.ENGLISH)
        assert await first.submit_bid("a", 10, {"eta": 3})
        assert not await second.submit_bid("b", 10, None)  # must beat 10
        assert await second.submit_bid("b", 12, None)
        assert not await first.submit_bid("a", 11, None)  # first catches up: 12 is highest
        result = await first.resolve()
        assert (result.winner, result.price) == ("b", 12)
        assert await second.resolve() == result
        rebuilt = BiddingProtocol(other_log, auction_id="job-7")
        await rebuilt.start()
        assert rebuilt.result == result and rebuilt.auction_type is AuctionType.ENGLISH
    finally:
        await other_log.close()


@pytest.mark.asyncio
async def test_concurrent_sealed_bids_over_two_connections(
    js_log: EventLog, nats_url: str, namespace: str
) -> None:
    other_log = await _second_log(nats_url, namespace)
    try:
        logs = [js_log, other_log]
        objects = [
            BiddingProtocol(
                logs[i % 2], auction_id="sealed", auction_type="second_price_sealed_bid"
            )
            for i in range(6)
        ]
        accepted = await asyncio.gather(
            *(p.submit_bid(f"agent{i}", float(10 + i), None) for i, p in enumerate(objects))
        )
        assert all(accepted)
        result = await objects[0].resolve()
        assert (result.winner, result.price) == ("agent5", 14.0)
        assert len(result.bids) == 6
    finally:
        await other_log.close()


@pytest.mark.asyncio
async def test_negotiation_and_delegation_rebuilt_from_jetstream(
    js_log: EventLog, nats_url: str, namespace: str
) -> None:
    neg = NegotiationProtocol(js_log)
    sid = await neg.create_session(["a", "b"], subject={"task": "t1"})
    pid = await neg.make_proposal(sid, "a", {"price": 3})
    assert await neg.accept(sid, pid, "b")
    delegations = DelegationProtocol(js_log)
    did = await delegations.delegate("a", "b", ["claim"])
    other_log = await _second_log(nats_url, namespace)
    try:
        async with NegotiationProtocol(other_log) as neg2, DelegationProtocol(other_log) as del2:
            session = neg2.get_session(sid)
            assert session is not None and session.status == "agreed"
            assert session.agreement == {"price": 3} and session.subject == {"task": "t1"}
            assert del2.has_permission("b", "claim")
            assert await del2.revoke(did)
        await delegations.sync()
        got = delegations.get(did)
        assert got is not None and not got.active
    finally:
        await other_log.close()
