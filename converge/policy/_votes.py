"""Vote counting shared by the governance models (internal)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from converge.errors import ConfigError, DecodeError

__all__ = [
    "Ballot",
    "agent_ids",
    "as_context",
    "ballots_of",
    "choice_key",
    "majority",
    "tally",
    "top_choice",
    "weight_of",
]

Ballot = tuple[str | None, Any]
"""One vote: (voter id or None for an anonymous ballot, choice)."""


def as_context(context: object) -> Mapping[str, Any]:
    """Return ``context`` as a mapping (``None`` is empty); ``DecodeError`` otherwise."""
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise DecodeError(f"governance context must be a dict, got {type(context).__name__}")
    return context


def ballots_of(votes: object, where: str = "votes") -> list[Ballot]:
    """Return ``votes`` (mapping voter -> choice, or list of choices) as ballots."""
    if votes is None:
        return []
    if isinstance(votes, Mapping):
        out: list[Ballot] = []
        for voter, choice in votes.items():
            if not isinstance(voter, str):
                raise DecodeError(f"governance {where} keys must be voter ids (str), got {voter!r}")
            out.append((voter, choice))
        return out
    if isinstance(votes, str | bytes) or not isinstance(votes, Iterable):
        raise DecodeError(
            f"governance {where} must be a mapping voter -> choice or a list of choices, "
            f"got {type(votes).__name__}"
        )
    return [(None, choice) for choice in votes]


def choice_key(choice: Any) -> Any:
    """Return a hashable key for ``choice`` (JSON text for unhashable values)."""
    try:
        hash(choice)
    except TypeError:
        try:
            return ("json", orjson.dumps(choice, option=orjson.OPT_SORT_KEYS))
        except TypeError as exc:
            raise DecodeError(f"governance choice {choice!r} is not JSON-able") from exc
    return ("value", type(choice).__name__, choice)


def tally(ballots: Iterable[tuple[Any, float]]) -> dict[Any, tuple[Any, float]]:
    """Return choice key -> (first such choice, total weight)."""
    totals: dict[Any, tuple[Any, float]] = {}
    for choice, weight in ballots:
        key = choice_key(choice)
        first, total = totals.get(key, (choice, 0.0))
        totals[key] = (first, total + weight)
    return totals


def majority(ballots: list[Ballot], threshold: float = 0.5) -> Any:
    """Return the choice with a share of votes strictly above ``threshold``, or ``None``."""
    if not ballots:
        return None
    totals = tally((choice, 1.0) for _, choice in ballots)
    choice, count = max(totals.values(), key=lambda item: item[1])
    return choice if count > len(ballots) * threshold else None


def top_choice(totals: dict[Any, tuple[Any, float]]) -> Any:
    """Return the choice with the highest total; ``None`` on a tie or when all are zero."""
    if not totals:
        return None
    ranked = sorted(totals.values(), key=lambda item: item[1], reverse=True)
    best, score = ranked[0]
    if score <= 0 or (len(ranked) > 1 and math.isclose(ranked[1][1], score)):
        return None
    return best


def agent_ids(value: object, what: str) -> frozenset[str]:
    """Return ``value`` as a set of agent ids; ``ConfigError`` naming ``what`` otherwise."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(f"{what} must be a list of agent ids, got {type(value).__name__}")
    items = list(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{what} must hold non-empty agent ids, got {item!r}")
    return frozenset(items)


def weight_of(value: object, where: str) -> float:
    """Return ``value`` as a finite weight >= 0; ``DecodeError`` naming ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DecodeError(f"governance {where} must be a finite number, got {value!r}")
    if value < 0:
        raise DecodeError(f"governance {where} must be >= 0, got {value!r}")
    return float(value)
