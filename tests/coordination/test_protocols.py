"""Coordination protocols on an in-process MemoryEventLog."""

from __future__ import annotations

import asyncio

import pytest

from converge.coordination.bidding import AuctionResult, AuctionType, BiddingProtocol
from converge.coordination.consensus import Consensus
from converge.coordination.delegation import DelegationProtocol
from converge.coordination.negotiation import NegotiationProtocol
from converge.errors import (
    ConfigError,
    DecodeError,
    InvalidStateError,
    NotAuthorizedError,
    NotFoundError,
)
from events import MemoryEventLog

# -- consensus -----------------------------------------------------------------


def test_majority_needs_strict_majority() -> None:
    assert Consensus.majority_vote({"a": "x", "b": "x", "c": "y"}) == "x"
    assert Consensus.majority_vote(["x", "y"]) is None
    assert Consensus.majority_vote(["x", "x", "y", "y"]) is None
    assert Consensus.majority_vote([]) is None
    assert Consensus.majority_vote({}) is None


def test_plurality_picks_most_votes_and_none_on_a_tie() -> None:
    assert Consensus.plurality_vote(["a", "b", "b", "c"]) == "b"
    assert Consensus.plurality_vote({"v1": "a", "v2": "b"}) is None  # a tie has no winner
    assert Consensus.plurality_vote([]) is None
    assert Consensus().plurality_vote([1, 2, 2]) == 2


def test_consensus_bad_votes() -> None:
    with pytest.raises(DecodeError):
        Consensus.majority_vote("abc")
    with pytest.raises(DecodeError):
        Consensus.plurality_vote([{"x": 1}])
    assert Consensus.majority_vote([["a", 1], ["a", 1], ["b"]]) == ("a", 1)


# -- bidding -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_first_price_sealed_bid() -> None:
    async with BiddingProtocol() as auction:
        assert await auction.submit_bid("a", 10, {"sla": 1})
        assert await auction.submit_bid("b", 12, None)
        assert not await auction.submit_bid("a", 20, None)  # one bid per agent
        result = await auction.resolve()
        assert isinstance(result, AuctionResult)
        assert (result.winner, result.price) == ("b", 12)
        assert result == "b"
        winner, price = result
        assert (winner, price) == ("b", 12)
        assert not await auction.submit_bid("c", 100, None)  # resolved
        assert await auction.resolve() == result


@pytest.mark.asyncio
async def test_second_price_pays_second_highest() -> None:
    auction = BiddingProtocol(auction_type=AuctionType.SECOND_PRICE_SEALED_BID)
    try:
        for agent, amount in (("a", 5), ("b", 9), ("c", 7)):
            assert await auction.submit_bid(agent, amount, None)
        result = await auction.resolve()
        assert (result.winner, result.price) == ("b", 7)
    finally:
        await auction.stop()


@pytest.mark.asyncio
async def test_second_price_single_bid_pays_reserve() -> None:
    async with BiddingProtocol(auction_type="second_price_sealed_bid", reserve_price=3) as auction:
        assert not await auction.submit_bid("low", 2, None)
        assert await auction.submit_bid("a", 8, None)
        result = await auction.resolve()
        assert (result.winner, result.price) == ("a", 3)


@pytest.mark.asyncio
async def test_english_bids_must_beat_highest() -> None:
    async with BiddingProtocol(auction_type=AuctionType.ENGLISH, min_increment=1) as auction:
        assert await auction.submit_bid("a", 5, None)
        assert not await auction.submit_bid("b", 5, None)
        assert not await auction.submit_bid("b", 5.5, None)
        assert await auction.submit_bid("b", 6, None)
        assert await auction.submit_bid("a", 8, None)  # same agent may raise
        assert auction.bids == {"a": 8, "b": 6}
        result = await auction.resolve()
        assert (result.winner, result.price) == ("a", 8)


@pytest.mark.asyncio
async def test_dutch_first_bid_at_price_wins() -> None:
    async with BiddingProtocol(
        auction_type=AuctionType.DUTCH,
        start_price=100,
        price_decrement=10,
        decrement_interval_sec=3600,
    ) as auction:
        assert auction.current_price() == 100
        assert not await auction.submit_bid("a", 50, None)  # below the price
        assert await auction.submit_bid("b", 100, None)
        assert not auction.is_active
        assert not await auction.submit_bid("c", 200, None)
        result = await auction.resolve()
        assert (result.winner, result.price) == ("b", 100)


@pytest.mark.asyncio
async def test_dutch_price_falls_with_time() -> None:
    async with BiddingProtocol(
        auction_type=AuctionType.DUTCH, start_price=100, price_decrement=10, reserve_price=75
    ) as auction:
        await auction.open()
        opened = auction.current_price()
        assert opened is not None and opened <= 100
        far_future = 1e12
        assert auction.current_price(now=far_future) == 75  # floored at the reserve


@pytest.mark.asyncio
async def test_no_bids_means_no_winner() -> None:
    async with BiddingProtocol(reserve_price=10) as auction:
        result = await auction.resolve()
        assert result.winner is None and result.price is None
        assert not result


@pytest.mark.asyncio
async def test_bidding_bad_input() -> None:
    with pytest.raises(ConfigError, match="auction_type"):
        BiddingProtocol(auction_type="vickrey-ish")
    with pytest.raises(ConfigError, match="start_price"):
        BiddingProtocol(auction_type=AuctionType.DUTCH)
    with pytest.raises(ConfigError, match="reserve_price"):
        BiddingProtocol(reserve_price=-1)
    async with BiddingProtocol() as auction:
        with pytest.raises(DecodeError, match="amount"):
            await auction.submit_bid("a", float("nan"), None)
        with pytest.raises(DecodeError, match="amount"):
            await auction.submit_bid("a", "10", None)  # type: ignore[arg-type]
        with pytest.raises(DecodeError, match="agent_id"):
            await auction.submit_bid("", 1, None)


@pytest.mark.asyncio
async def test_two_protocol_objects_share_one_auction() -> None:
    async with MemoryEventLog() as log:
        first = BiddingProtocol(log, auction_id="job-1")
        second = BiddingProtocol(log, auction_id="job-1", auction_type=AuctionType.ENGLISH)
        assert await first.submit_bid("a", 10, None)
        assert not await second.submit_bid("a", 11, None)  # sealed: a already bid
        assert await second.submit_bid("b", 11, None)
        assert second.auction_type is AuctionType.FIRST_PRICE_SEALED_BID  # adopted
        result = await first.resolve()
        assert (result.winner, result.price) == ("b", 11)
        await second.sync()
        assert second.result == result
        assert not await second.submit_bid("c", 50, None)
        # A third object rebuilt from the stream sees the same auction.
        third = BiddingProtocol(log, auction_id="job-1")
        await third.start()
        assert third.result == result
        assert [b.agent_id for b in third.list_bids()] == ["a", "b"]
        for p in (first, second, third):
            await p.stop()


@pytest.mark.asyncio
async def test_concurrent_bids_on_one_auction_are_all_ordered() -> None:
    async with MemoryEventLog() as log:
        objects = [
            BiddingProtocol(log, auction_id="race", auction_type="english") for _ in range(4)
        ]
        results = await asyncio.gather(
            *(p.submit_bid(f"agent{i}", 10 + i, None) for i, p in enumerate(objects))
        )
        assert any(results)
        await objects[0].sync()
        amounts = [b.amount for b in objects[0].list_bids()]
        assert amounts == sorted(amounts) and len(set(amounts)) == len(amounts)
        result = await objects[1].resolve()
        assert result.winner is not None
        assert result.price == max(amounts)


@pytest.mark.asyncio
async def test_auction_events_are_on_the_coord_stream() -> None:
    async with MemoryEventLog() as log:
        auction = BiddingProtocol(log, auction_id="a.b c")  # id needs encoding
        await auction.submit_bid("x", 1, None)
        await auction.resolve()
        types = [r.event.type async for r in log.read(stream="coord")]
        assert types == ["auction.opened", "bid.submitted", "auction.resolved"]
        subjects = {r.subject async for r in log.read(stream="coord")}
        assert len(subjects) == 1 and next(iter(subjects)).startswith("coord.auction.")


# -- negotiation ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_negotiation_agreement() -> None:
    async with NegotiationProtocol() as neg:
        sid = await neg.create_session(["a", "b", "c"], subject="price")
        await neg.make_proposal(sid, "a", {"price": 10})
        counter = await neg.make_proposal(sid, "b", {"price": 12})
        session = neg.get_session(sid)
        assert session is not None and session.proposals[0].status == "superseded"
        assert not await neg.accept(sid, counter, "a")
        assert await neg.accept(sid, None, "c")  # the current proposal
        session = neg.get_session(sid)
        assert session is not None
        assert session.status == "agreed" and session["agreement"] == {"price": 12}
        assert session.to_dict()["agreed_proposal_id"] == counter
        with pytest.raises(InvalidStateError):
            await neg.make_proposal(sid, "a", {"price": 1})
        assert await neg.propose(sid, "a", {"price": 1}) is False


@pytest.mark.asyncio
async def test_negotiation_errors() -> None:
    async with NegotiationProtocol() as neg:
        with pytest.raises(DecodeError):
            await neg.create_session([])
        with pytest.raises(DecodeError):
            await neg.create_session("ab")  # type: ignore[arg-type]
        sid = await neg.create_session(["a", "b"])
        with pytest.raises(NotFoundError):
            await neg.make_proposal("nope", "a", 1)
        with pytest.raises(NotAuthorizedError):
            await neg.make_proposal(sid, "mallory", 1)
        assert await neg.propose(sid, "mallory", 1) is False
        with pytest.raises(InvalidStateError):
            await neg.accept(sid, None, "b")  # nothing proposed yet
        pid = await neg.make_proposal(sid, "a", 1)
        with pytest.raises(NotFoundError):
            await neg.accept(sid, "missing", "b")
        with pytest.raises(NotAuthorizedError):
            await neg.accept(sid, pid, "mallory")
        assert neg.get_session("nope") is None


@pytest.mark.asyncio
async def test_negotiation_rebuilt_from_the_stream() -> None:
    async with MemoryEventLog() as log:
        writer = NegotiationProtocol(log)
        sid = await writer.create_session(["a", "b"])
        pid = await writer.make_proposal(sid, "a", "deal")
        other = NegotiationProtocol(log)
        assert await other.accept(sid, pid, "b")  # the second object catches up first
        await writer.sync()
        session = writer.get_session(sid)
        assert session is not None and session.status == "agreed"
        await writer.stop()
        await other.stop()


# -- delegation ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_delegation_grant_revoke() -> None:
    async with DelegationProtocol() as delegations:
        did = await delegations.delegate("boss", "worker", ["claim", "report"])
        d = delegations.get(did)
        assert d is not None and d.active and d.permissions == ["claim", "report"]
        assert delegations.has_permission("worker", "claim")
        other = await delegations.delegate("boss", "helper", {"pool": "p1"})
        assert [x.id for x in delegations.list(delegator_id="boss")] == [did, other]
        assert await delegations.revoke(did)
        assert not await delegations.revoke(did)
        assert not await delegations.revoke("unknown")
        assert not delegations.has_permission("worker", "claim")
        assert [x.id for x in delegations.list()] == [other]
        assert len(delegations.list(active_only=False)) == 2


@pytest.mark.asyncio
async def test_delegation_errors_and_rebuild() -> None:
    async with MemoryEventLog() as log:
        delegations = DelegationProtocol(log)
        with pytest.raises(InvalidStateError):
            await delegations.delegate("a", "a", [])
        with pytest.raises(DecodeError):
            await delegations.delegate("a", "b", 5)  # type: ignore[arg-type]
        with pytest.raises(DecodeError):
            await delegations.delegate("", "b", [])
        did = await delegations.delegate("a", "b", ["x"])
        await delegations.revoke(did)
        rebuilt = DelegationProtocol(log)
        await rebuilt.start()
        got = rebuilt.get(did)
        assert got is not None and not got.active and got["scope"] == {"permissions": ["x"]}
        await delegations.stop()
        await rebuilt.stop()


@pytest.mark.asyncio
async def test_protocols_start_on_first_command_and_reject_bad_logs() -> None:
    with pytest.raises(ConfigError, match="event_log"):
        NegotiationProtocol("not a log")  # type: ignore[arg-type]
    log = MemoryEventLog()  # not started: its owner forgot, a command still works
    neg = NegotiationProtocol(log)
    assert not neg.is_started
    sid, other = await asyncio.gather(neg.create_session(["a"]), neg.create_session(["b"]))
    assert neg.is_started and neg.get_session(sid) is not None and sid != other
    await neg.stop()
    await neg.stop()
    await log.stop()


def test_sealed_auction_rules_match_a_reference() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    amounts = st.lists(st.integers(min_value=0, max_value=50), min_size=0, max_size=8)

    @settings(max_examples=60, deadline=None)
    @given(amounts, st.sampled_from(["first_price_sealed_bid", "second_price_sealed_bid"]))
    def check(bids: list[int], kind: str) -> None:
        async def go() -> tuple[str | None, float | None]:
            async with BiddingProtocol(auction_type=kind) as auction:
                for i, amount in enumerate(bids):
                    assert await auction.submit_bid(f"a{i}", amount, None)
                result = await auction.resolve()
                return result.winner, result.price

        winner, price = asyncio.run(go())
        if not bids:
            assert (winner, price) == (None, None)
            return
        best = max(bids)
        assert winner == f"a{bids.index(best)}"  # ties: the earliest bid
        ranked = sorted(bids, reverse=True)
        expected = ranked[0] if kind == "first_price_sealed_bid" or len(bids) == 1 else ranked[1]
        assert price == expected

    check()
