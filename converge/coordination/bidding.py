"""Auctions as event streams: one auction per ``auction_id`` on ``coord.auction.<id>``.

Every protocol object built on the same event log and ``auction_id`` shares one auction:
bids and the resolution are events, appended with an optimistic concurrency check on the
auction's subject, so concurrent bidders (in one process or many) see one order of bids.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

from converge.core._codec import check_str, check_value
from converge.core.store import AsyncStore, Store
from converge.errors import ConfigError, DecodeError
from converge.service import Plan, ProjectedService
from events import AuctionOpened, AuctionResolved, BidSubmitted, Event, EventLog
from projections.auctions import Auction, AuctionProjection, AuctionResult, AuctionType, Bid
from projections.verify import SignatureVerifier

__all__ = ["AuctionResult", "AuctionType", "Bid", "BiddingProtocol"]

logger = logging.getLogger(__name__)


def _check_amount(amount: object) -> float:
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise DecodeError(f"bid amount must be a number, got {type(amount).__name__}")
    value = float(amount)
    if not math.isfinite(value) or value < 0:
        raise DecodeError(f"bid amount must be a finite number >= 0, got {amount!r}")
    return value


def _optional_price(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")
    return float(value)


class BiddingProtocol(ProjectedService[AuctionProjection]):
    """Run one auction (``auction_id``, a new uuid when omitted) of ``auction_type``.

    ``reserve_price``: bids below it are refused and a resolution without a bid at or
    above it has no winner. English auctions also take ``min_increment``; Dutch auctions
    need ``start_price`` and fall by ``price_decrement`` every ``decrement_interval_sec``
    (wall-clock seconds since the auction opened) down to the reserve price. The first
    object to act on an auction records its parameters; later objects adopt them.
    ``snapshot_store`` and ``verifier`` work as for :class:`TaskManager`.
    """

    def __init__(
        self,
        event_log: EventLog | None = None,
        *,
        auction_type: AuctionType | str = AuctionType.FIRST_PRICE_SEALED_BID,
        auction_id: str | None = None,
        reserve_price: float | None = None,
        start_price: float | None = None,
        price_decrement: float = 0.0,
        decrement_interval_sec: float = 1.0,
        min_increment: float = 0.0,
        snapshot_store: Store | AsyncStore | None = None,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        try:
            kind = AuctionType(auction_type)
        except ValueError:
            raise ConfigError(
                f"unknown auction_type {auction_type!r}; "
                f"use one of {[t.value for t in AuctionType]}"
            ) from None
        self.auction_id = (
            uuid.uuid4().hex
            if auction_id is None
            else check_str(auction_id, "auction_id", allow_empty=False)
        )
        start = _optional_price(start_price, "start_price")
        if kind is AuctionType.DUTCH and start is None:
            raise ConfigError("a Dutch auction needs start_price (the price it falls from)")
        if decrement_interval_sec <= 0:
            raise ConfigError(f"decrement_interval_sec must be > 0, got {decrement_interval_sec!r}")
        super().__init__(
            AuctionProjection(self.auction_id),
            event_log,
            snapshot_store=snapshot_store,
            verifier=verifier,
        )
        self._params: dict[str, Any] = {
            "reserve_price": _optional_price(reserve_price, "reserve_price"),
            "start_price": start,
            "price_decrement": _optional_price(price_decrement, "price_decrement") or 0.0,
            "decrement_interval_sec": float(decrement_interval_sec),
            "min_increment": _optional_price(min_increment, "min_increment") or 0.0,
        }
        self._requested_type = kind
        self._subject = self.projection.subject

    @property
    def _auction(self) -> Auction | None:
        return self.projection.auction

    # -- queries -----------------------------------------------------------------

    @property
    def auction_type(self) -> AuctionType:
        """The auction's type (as recorded when it opened, once it has)."""
        auction = self._auction
        return auction.auction_type if auction else self._requested_type

    @property
    def is_active(self) -> bool:
        """Whether the auction still takes bids."""
        auction = self._auction
        return auction is None or auction.result is None

    @property
    def active(self) -> bool:
        """Whether the auction still takes bids (the seed's name for ``is_active``)."""
        return self.is_active

    @property
    def bids(self) -> dict[str, float]:
        """Each bidder's best accepted amount so far."""
        out: dict[str, float] = {}
        for bid in self.list_bids():
            out[bid.agent_id] = max(bid.amount, out.get(bid.agent_id, bid.amount))
        return out

    def list_bids(self) -> list[Bid]:
        """Return the accepted bids in order."""
        auction = self._auction
        return list(auction.bids) if auction else []

    @property
    def result(self) -> AuctionResult | None:
        """The resolution, or None while the auction is open."""
        auction = self._auction
        return auction.result if auction else None

    def highest_bid(self) -> Bid | None:
        """Return the highest accepted bid (the earliest among equals), or None."""
        best: Bid | None = None
        for bid in self.list_bids():
            if best is None or bid.amount > best.amount:
                best = bid
        return best

    def current_price(self, now: float | None = None) -> float | None:
        """Return the Dutch auction's price at ``now`` (wall-clock seconds); None otherwise."""
        auction = self._auction
        if auction is None:
            auction = self._pending_auction(self._opening())
            auction.opened_at = time.time()
        if auction.auction_type is not AuctionType.DUTCH or auction.start_price is None:
            return None
        return _dutch_price(auction, time.time() if now is None else now)

    # -- commands ------------------------------------------------------------------

    async def open(self) -> None:
        """Record the auction's opening (done implicitly by the first bid); idempotent."""

        def plan() -> Plan[None]:
            return self._opening(), None

        await self._execute(self._subject, plan, what=f"opening of auction {self.auction_id}")

    async def submit_bid(self, agent_id: str, amount: float, content: Any = None) -> bool:
        """Submit a bid; return whether the auction accepted it.

        Refused (False): the auction is resolved; the amount is below the reserve price;
        sealed auctions: the agent already bid; English: the amount does not beat the
        current highest by ``min_increment``; Dutch: the amount is below the current
        price (an accepted Dutch bid wins at the current price and resolves the auction).
        Raises ``DecodeError`` for an empty agent id or a non-finite/negative amount.
        """
        agent_id = check_str(agent_id, "agent_id", allow_empty=False)
        value = _check_amount(amount)
        content = check_value(content, "bid content")

        def plan() -> Plan[bool]:
            opening = self._opening()
            auction = self._auction or self._pending_auction(opening)
            accepted_amount = _admit(auction, agent_id, value)
            if accepted_amount is None:
                return opening, False
            bid = BidSubmitted(
                auction_id=self.auction_id,
                agent_id=agent_id,
                amount=accepted_amount,
                content=content,
                actor=agent_id,
            )
            return [*opening, bid], True

        accepted = await self._execute(
            self._subject, plan, what=f"bid on auction {self.auction_id}"
        )
        if accepted and self.auction_type is AuctionType.DUTCH:
            await self.resolve()
        return accepted

    async def resolve(self) -> AuctionResult:
        """Close the auction and return its result; later calls return the same result.

        First price: the highest bid pays its amount; second price: it pays the
        second-highest amount (or the reserve price, or its own amount, without a second
        bid); English: the highest bid pays its amount; Dutch: the first bid at the
        price pays that price. Ties go to the earlier bid.
        """

        def plan() -> Plan[AuctionResult]:
            opening = self._opening()
            auction = self._auction or self._pending_auction(opening)
            if auction.result is not None:
                return [], auction.result
            result = _compute(self.auction_id, auction)
            event = AuctionResolved(
                auction_id=self.auction_id,
                winner=result.winner,
                price=result.price,
                auction_type=auction.auction_type.value,
            )
            return [*opening, event], result

        return await self._execute(
            self._subject, plan, what=f"resolution of auction {self.auction_id}"
        )

    # -- rules -----------------------------------------------------------------------

    def _opening(self) -> list[Event]:
        if self.projection.auction is not None:
            return []
        return [
            AuctionOpened(
                auction_id=self.auction_id,
                auction_type=self._requested_type.value,
                params=dict(self._params),
            )
        ]

    @staticmethod
    def _pending_auction(opening: Sequence[Event]) -> Auction:
        event = opening[0]
        assert isinstance(event, AuctionOpened)
        return Auction.opened(event)


def _dutch_price(auction: Auction, now: float) -> float:
    start = auction.start_price or 0.0
    elapsed = max(0.0, now - auction.opened_at) if auction.opened_at else 0.0
    steps = math.floor(elapsed / auction.decrement_interval_sec)
    return max(start - steps * auction.price_decrement, auction.reserve_price or 0.0)


def _admit(auction: Auction, agent_id: str, amount: float) -> float | None:
    """Return the amount to record when the bid is valid, else None."""
    if auction.result is not None:
        return None
    if auction.reserve_price is not None and amount < auction.reserve_price:
        return None
    kind = auction.auction_type
    if kind in (AuctionType.FIRST_PRICE_SEALED_BID, AuctionType.SECOND_PRICE_SEALED_BID):
        if any(b.agent_id == agent_id for b in auction.bids):
            return None
        return amount
    if kind is AuctionType.ENGLISH:
        best = max((b.amount for b in auction.bids), default=None)
        if best is None:
            return amount
        if amount <= best or amount < best + auction.min_increment:
            return None
        return amount
    # Dutch: the first bid at or above the current price takes it at that price.
    if auction.bids or auction.start_price is None:
        return None
    price = _dutch_price(auction, time.time())
    return price if amount >= price else None


def _compute(auction_id: str, auction: Auction) -> AuctionResult:
    ranked = sorted(auction.bids, key=lambda b: (-b.amount, b.sequence))
    winner: str | None = None
    price: float | None = None
    if ranked:
        top = ranked[0]
        winner, price = top.agent_id, top.amount
        if auction.auction_type is AuctionType.SECOND_PRICE_SEALED_BID:
            others = [b.amount for b in ranked[1:] if b.agent_id != top.agent_id]
            if others:
                price = others[0]
            elif auction.reserve_price is not None:
                price = auction.reserve_price
            if auction.reserve_price is not None:
                price = max(price, auction.reserve_price)
    return AuctionResult(
        auction_id=auction_id,
        auction_type=auction.auction_type,
        winner=winner,
        price=price,
        bids=tuple(auction.bids),
    )
