"""Pure vote counting: majority and plurality over a set of votes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from converge.errors import DecodeError

__all__ = ["Consensus"]


def _choices(votes: Mapping[Any, Any] | Iterable[Any]) -> list[Hashable]:
    if isinstance(votes, str | bytes):
        raise DecodeError("votes must be a mapping voter -> choice or a list of choices")
    values = list(votes.values()) if isinstance(votes, Mapping) else list(votes)
    out: list[Hashable] = []
    for value in values:
        if isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, Hashable):
            raise DecodeError(f"vote choice {value!r} is not hashable; use a str, number or tuple")
        out.append(value)
    return out


class Consensus:
    """Vote counting rules; every method is pure and takes the votes as given.

    ``votes`` is a mapping voter id -> choice (one vote per voter) or a list of choices.
    """

    @staticmethod
    def majority_vote(votes: Mapping[Any, Any] | Iterable[Any]) -> Any:
        """Return the choice with more than half of the votes, or None without one."""
        choices = _choices(votes)
        if not choices:
            return None
        choice, count = Counter(choices).most_common(1)[0]
        return choice if count * 2 > len(choices) else None

    @staticmethod
    def plurality_vote(votes: Mapping[Any, Any] | Iterable[Any]) -> Any:
        """Return the choice with strictly the most votes.

        Returns None when there are no votes or when two or more choices tie for the
        most votes, as in the seed design.
        """
        choices = _choices(votes)
        if not choices:
            return None
        ranked = Counter(choices).most_common(2)
        if not ranked:
            return None
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            return None
        return ranked[0][0]

    @staticmethod
    def tally(votes: Mapping[Any, Any] | Iterable[Any]) -> dict[Hashable, int]:
        """Return the number of votes per choice."""
        return dict(Counter(_choices(votes)))

    @staticmethod
    def unanimous(votes: Mapping[Any, Any] | Iterable[Any]) -> Any:
        """Return the choice every vote names, or None."""
        choices = _choices(votes)
        return choices[0] if choices and all(c == choices[0] for c in choices) else None
