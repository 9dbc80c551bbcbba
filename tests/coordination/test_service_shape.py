"""Every stateful service has one shape: a projection, snapshots, signature checks,
and commands through one retry helper; on every EventLog backend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import nats
import pytest

from converge.coordination import PoolManager, TaskManager
from converge.coordination.bidding import AuctionType, BiddingProtocol
from converge.coordination.delegation import DelegationProtocol
from converge.coordination.negotiation import NegotiationProtocol
from converge.extensions.storage.memory import MemoryStore
from converge.network.discovery import AgentDescriptor, DiscoveryQuery, DiscoveryService
from converge.network.identity_registry import IdentityRegistry
from converge.policy.trust import TrustModel
from converge.service import DEFAULT_MAX_ATTEMPTS, ProjectedService
from events import BidSubmitted, EventLog, EventSigner, MemoryEventLog, encode_event, subject
from events.signing import HDR_SIGNATURE, HDR_SIGNER
from projections import SignatureVerifier

LogFactory = Callable[..., Awaitable[EventLog]]


def test_every_stateful_service_is_a_projected_service() -> None:
    services = [
        TaskManager(),
        PoolManager(),
        BiddingProtocol(),
        NegotiationProtocol(),
        DelegationProtocol(),
        TrustModel(),
        DiscoveryService(),
    ]
    for service in services:
        assert isinstance(service, ProjectedService)
        assert service.max_attempts >= 1
    assert TaskManager().max_attempts == DEFAULT_MAX_ATTEMPTS
    assert TrustModel(max_retries=2).max_attempts == 3


@pytest.mark.asyncio
async def test_auctions_on_one_log_read_only_their_own_subject(event_log: EventLog) -> None:
    async with (
        BiddingProtocol(event_log, auction_id="a") as first,
        BiddingProtocol(event_log, auction_id="b", auction_type=AuctionType.ENGLISH) as second,
    ):
        for i in range(5):
            assert await first.submit_bid(f"x{i}", 10 + i)
            assert await second.submit_bid(f"y{i}", 10 + i)
        assert [b.agent_id for b in first.list_bids()] == [f"x{i}" for i in range(5)]
        assert [b.agent_id for b in second.list_bids()] == [f"y{i}" for i in range(5)]
        assert first.runner.resyncs == 0 and second.runner.resyncs == 0
        async with BiddingProtocol(event_log, auction_id="a") as late:
            assert late.bids == first.bids
            assert await late.submit_bid("late", 100)
            await first.sync()
            assert first.highest_bid() is not None and first.highest_bid().agent_id == "late"  # type: ignore[union-attr]
            assert (await first.resolve()).winner == "late"
            await late.sync()
            assert late.result is not None and late.result.winner == "late"
        await second.sync()
        assert second.is_active


@pytest.mark.asyncio
async def test_coordination_state_resumes_from_snapshots(event_log: EventLog) -> None:
    store = MemoryStore()
    async with BiddingProtocol(event_log, auction_id="a", snapshot_store=store) as auction:
        await auction.submit_bid("x", 3)
        await auction.submit_bid("y", 5)
        await auction.resolve()
    async with NegotiationProtocol(event_log, snapshot_store=store) as talks:
        session = await talks.create_session(["p", "q"])
        proposal = await talks.make_proposal(session, "p", {"price": 1})
        assert await talks.accept(session, proposal, "q")
    async with DelegationProtocol(event_log, snapshot_store=store) as grants:
        kept = await grants.delegate("p", "q", ["read"])
        gone = await grants.delegate("p", "r", {"permissions": ["write"]})
        assert await grants.revoke(gone)
    async with TrustModel(event_log, snapshot_store=store) as trust:
        await trust.update_trust("p", 0.25)
    async with DiscoveryService(event_log, snapshot_store=store) as discovery:
        await discovery.register(AgentDescriptor("p", topics=["news"], capabilities=["search"]))
        await discovery.register(AgentDescriptor("q"))
        await discovery.unregister("q")

    async with BiddingProtocol(event_log, auction_id="a", snapshot_store=store) as auction:
        assert auction.runner.restored_from_snapshot
        assert auction.result is not None and (auction.result.winner, auction.result.price) == (
            "y",
            5,
        )
        assert [b.agent_id for b in auction.list_bids()] == ["x", "y"]
        assert not await auction.submit_bid("z", 9)
    async with NegotiationProtocol(event_log, snapshot_store=store) as talks:
        assert talks.runner.restored_from_snapshot
        restored = talks.get_session(session)
        assert restored is not None and restored.agreement == {"price": 1}
    async with DelegationProtocol(event_log, snapshot_store=store) as grants:
        assert grants.runner.restored_from_snapshot
        assert grants.has_permission("q", "read") and not grants.has_permission("r", "write")
        assert [d.id for d in grants.list(active_only=False)] == [kept, gone]
    async with TrustModel(event_log, snapshot_store=store) as trust:
        assert trust.runner.restored_from_snapshot
        assert trust.get_trust("p") == pytest.approx(0.75)
    async with DiscoveryService(event_log, snapshot_store=store) as discovery:
        assert discovery.runner.restored_from_snapshot
        found = discovery.query(DiscoveryQuery(capabilities=["search"]))
        assert [d.id for d in found] == ["p"]
        assert found[0] is discovery.get("p")  # stored descriptors, not rebuilt per query


@pytest.mark.asyncio
async def test_protocols_verify_signatures(
    backend: str | None, log_factory: LogFactory, namespace: str
) -> None:
    writer = EventSigner(bytes(range(32)), key_id="x")
    registry = IdentityRegistry()
    registry.register("x", writer.public_key)
    log = await log_factory(namespace, writer)
    try:
        verifier = SignatureVerifier(registry.get)
        async with BiddingProtocol(log, auction_id="a", verifier=verifier) as auction:
            assert await auction.submit_bid("x", 1)
            subj = subject("coord", "auction", "a")
            forged = BidSubmitted(auction_id="a", agent_id="x", amount=1000.0, actor="x")
            body, headers = encode_event(forged)
            headers[HDR_SIGNER] = "x"
            headers[HDR_SIGNATURE] = EventSigner(bytes(range(1, 33)), key_id="x").sign(
                subj, body, forged.type
            )
            if backend is None:
                assert isinstance(log, MemoryEventLog)
                log.append_raw(subj, body, headers)
            else:
                nc = await nats.connect(backend)
                try:
                    await nc.jetstream().publish(f"{namespace}.{subj}", body, headers=headers)
                finally:
                    await nc.close()
            await auction.sync()
            assert auction.runner.rejected_events == 1
            assert auction.bids == {"x": 1.0}
            result = await auction.resolve()  # the version moved past the forgery
            assert (result.winner, result.price) == ("x", 1.0)
            assert auction.conflicts == 0
    finally:
        await log.close()
