"""AuctionProjection: one auction's events (``coord.auction.<id>``) folded into its state."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from converge.errors import DecodeError, InvalidStateError
from events import AuctionOpened, AuctionResolved, BidSubmitted, RecordedEvent, subject
from projections.base import Projection

__all__ = [
    "COORD_STREAM",
    "Auction",
    "AuctionProjection",
    "AuctionResult",
    "AuctionType",
    "Bid",
]

logger = logging.getLogger(__name__)

COORD_STREAM = "coord"
"""Stream kind of every coordination event: ``coord.<kind>.<entity id>``."""


class AuctionType(StrEnum):
    """How an auction is run and resolved."""

    FIRST_PRICE_SEALED_BID = "first_price_sealed_bid"
    """One bid per agent; the highest bid wins and pays its own amount."""
    SECOND_PRICE_SEALED_BID = "second_price_sealed_bid"
    """One bid per agent; the highest bid wins and pays the second-highest amount."""
    ENGLISH = "english"
    """Open ascending: each bid must beat the current highest; the highest wins."""
    DUTCH = "dutch"
    """Open descending: the price falls over time; the first bid at the price wins."""


@dataclass(frozen=True)
class Bid:
    """One accepted bid; ``sequence`` orders bids (ties go to the earlier bid)."""

    agent_id: str
    amount: float
    content: Any = None
    sequence: int = 0


@dataclass(frozen=True)
class AuctionResult:
    """The outcome of an auction: ``winner`` (None without a valid bid) and ``price``.

    Unpacks as ``winner, price = result`` and compares equal to the winner's id, so code
    that treats the result as the winning agent id keeps working.
    """

    auction_id: str
    auction_type: AuctionType
    winner: str | None
    price: float | None
    bids: tuple[Bid, ...] = ()

    def __iter__(self) -> Iterator[Any]:
        yield self.winner
        yield self.price

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.winner == other
        if isinstance(other, AuctionResult):
            return (self.auction_id, self.winner, self.price, self.auction_type) == (
                other.auction_id,
                other.winner,
                other.price,
                other.auction_type,
            )
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.auction_id, self.winner, self.price))

    def __bool__(self) -> bool:
        return self.winner is not None


@dataclass
class Auction:
    """An auction's folded state: its recorded parameters, bids and result."""

    auction_type: AuctionType
    reserve_price: float | None = None
    start_price: float | None = None
    price_decrement: float = 0.0
    decrement_interval_sec: float = 1.0
    min_increment: float = 0.0
    opened_at: float = 0.0
    bids: list[Bid] = field(default_factory=list)
    result: AuctionResult | None = None

    @classmethod
    def opened(cls, event: AuctionOpened) -> Auction:
        """Return the state an ``auction.opened`` event starts."""
        params = event.params
        return cls(
            auction_type=AuctionType(event.auction_type),
            reserve_price=params.get("reserve_price"),
            start_price=params.get("start_price"),
            price_decrement=float(params.get("price_decrement") or 0.0),
            decrement_interval_sec=float(params.get("decrement_interval_sec") or 1.0),
            min_increment=float(params.get("min_increment") or 0.0),
            opened_at=event.occurred_at,
        )


class AuctionProjection(Projection):
    """The state of auction ``auction_id`` (``auction`` stays None until it opens).

    Reads only the auction's subject. ``auction.opened`` records the parameters (a
    second opening is ignored), ``bid.submitted`` appends a bid, ``auction.resolved``
    sets the result; a bid or resolution before the opening is skipped.
    """

    name: ClassVar[str] = "auction"
    streams: ClassVar[tuple[str, ...]] = (COORD_STREAM,)

    def __init__(self, auction_id: str) -> None:
        self.auction_id = auction_id
        self.auction: Auction | None = None
        super().__init__()
        self.subject = subject(COORD_STREAM, "auction", auction_id)
        self.filters[COORD_STREAM] = self.subject
        self.key = f"auction.{self.subject.rsplit('.', 1)[1]}"

    def fold(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if isinstance(event, AuctionOpened):
            if self.auction is None:
                self.auction = Auction.opened(event)
            return
        auction = self.auction
        if auction is None:
            raise InvalidStateError(
                f"auction {self.auction_id}: {event.type} before auction.opened"
            )
        if isinstance(event, BidSubmitted):
            auction.bids.append(
                Bid(event.agent_id, float(event.amount), event.content, recorded.sequence)
            )
        elif isinstance(event, AuctionResolved):
            auction.result = AuctionResult(
                auction_id=self.auction_id,
                auction_type=auction.auction_type,
                winner=event.winner,
                price=event.price,
                bids=tuple(auction.bids),
            )

    def clear(self) -> None:
        self.auction = None

    def snapshot_state(self) -> dict[str, Any]:
        auction = self.auction
        if auction is None:
            return {"auction": None}
        data = dataclasses.asdict(auction)
        data["auction_type"] = auction.auction_type.value
        if auction.result is not None:
            data["result"] = {"winner": auction.result.winner, "price": auction.result.price}
        return {"auction": data}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        data = state["auction"]
        if data is None:
            self.auction = None
            return
        if not isinstance(data, Mapping):
            raise DecodeError("auction snapshot must hold a dict")
        bids = [Bid(**bid) for bid in data["bids"]]
        auction = Auction(
            **{k: v for k, v in data.items() if k not in ("bids", "result", "auction_type")},
            auction_type=AuctionType(data["auction_type"]),
            bids=bids,
        )
        result = data.get("result")
        if result is not None:
            auction.result = AuctionResult(
                self.auction_id,
                auction.auction_type,
                result["winner"],
                result["price"],
                tuple(bids),
            )
        self.auction = auction
