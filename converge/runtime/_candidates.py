"""Which PENDING task a worker claims next, so that workers seldom race for one task.

Workers in different processes see the same candidates in the same order, and each
sees another's claim only once it is delivered: two workers picking alike lose races
(a refused append each, and a wait for the winner's event). So the candidates are
shared out by rendezvous hashing: every worker learns the other claimers from the
claims it folds (its *peers*), and a task belongs to whichever of them scores highest
for it (a hash of the task id and the claimer id), the same in every process that
knows the same peers; one that knows a peer fewer disagrees only about that peer's
tasks. A worker claims its own tasks oldest first and leaves the others' to their
owners, unless those have waited ``steal_after_sec`` longer than its own oldest (their
owner is busy, slow, gone, or does not take such tasks): then it takes one at random
from the younger half of those due among the oldest ``window`` (the owner claims from
the oldest), or the oldest itself once it is ``starve_after_sec`` past due. So no task
waits for ever under sustained load, and the order stays roughly first in, first out.
A worker that knows no peer yet (at start, or alone) picks at random among the oldest
``window`` candidates. Peers not seen claiming for ``peer_ttl_sec`` are forgotten, so
the tasks of a worker that stopped go back to the others. When the claimers change,
a backlog of more than 4,096 ids is shared out again lazily, as picks reach it.
"""

from __future__ import annotations

import itertools
import random
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Candidates"]

T = TypeVar("T")

_EAGER_RESHAPE = 4096  # queued ids shared out again at once when the claimers change
_Entry = tuple[float, int, str]  # (when it became a candidate here, its turn, task id)


def _mix(x: int) -> int:
    """A 64-bit finalizer (splitmix64): every input bit moves every output bit."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


class Candidates:
    """The claimable task ids of one worker, split into its own and its peers'."""

    def __init__(
        self,
        me: str,
        *,
        window: int = 64,
        steal_after_sec: float = 0.1,
        starve_after_sec: float = 0.5,
        peer_ttl_sec: float = 10.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.me = me
        self.window = window
        self.steal_after_sec = steal_after_sec
        self.starve_after_sec = starve_after_sec
        self.peer_ttl_sec = peer_ttl_sec
        self._rng = rng or random.Random()
        self._clock = clock
        self._mine: deque[_Entry] = deque()
        self._others: deque[_Entry] = deque()
        self._unsorted: deque[_Entry] = deque()  # not shared out since the claimers changed
        self._turns = itertools.count()  # the order ids were queued in, for ties in time
        self._queued: set[str] = set()
        self._peers: dict[str, float] = {}  # other claimers -> when last seen claiming
        self._count = 1  # claimers known, this worker included
        self._my_hash = zlib.crc32(me.encode())
        self._peer_hashes: tuple[int, ...] = ()
        self._next_expiry = 0.0
        self.steals = 0

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def alone(self) -> bool:
        """Whether this worker knows no other claimer (then it picks at random)."""
        return self._count == 1

    @property
    def peers(self) -> list[str]:
        """The other claimers this worker shares candidates with, sorted."""
        return sorted(self._peers)

    def _owned(self, task_id: str) -> bool:
        """Whether this worker scores highest for ``task_id`` among the claimers it knows."""
        if self._count == 1:
            return True
        key = zlib.crc32(task_id.encode())
        mine = _mix(key ^ self._my_hash)
        return all(_mix(key ^ peer) < mine for peer in self._peer_hashes)

    # -- input ---------------------------------------------------------------------------

    def add(self, task_id: str) -> bool:
        """Queue ``task_id`` (once); return whether a waiting claimer should look now."""
        queued = self._queued
        if task_id in queued:
            return False
        queued.add(task_id)
        entry = (self._clock(), next(self._turns), task_id)
        if self._unsorted:  # behind those still to be shared out, to keep the order
            self._unsorted.append(entry)
            return True
        if self._owned(task_id):
            self._mine.append(entry)
            return True
        self._others.append(entry)
        return len(self._others) == 1  # the first: its steal deadline starts now

    def saw_claim(self, agent_id: str) -> None:
        """Note that ``agent_id`` claimed a task (a peer, unless it is this worker)."""
        if agent_id == self.me:
            return
        peers = self._peers
        known = agent_id in peers
        peers[agent_id] = self._clock()
        if not known:
            self._reshape()

    # -- output --------------------------------------------------------------------------

    def pick(self, usable: Callable[[str], T | None]) -> T | None:
        """Remove and return the next candidate ``usable`` accepts; ``None`` when none is due.

        ``usable(task_id)`` returns the task when it can still be claimed, else ``None``
        (the id is dropped). Others' tasks not yet due stay queued: :meth:`steal_in`.
        """
        now = self._clock()
        if now >= self._next_expiry:
            self._expire(now)
        mine, others = self._mine, self._others
        while True:
            if self._unsorted:
                self._share_out()
            if self._count == 1:
                task = self._random(mine, len(mine), usable)
                if task is None and self._unsorted:
                    continue
                return task
            own = self._head(mine, usable)
            if own is None and self._unsorted:
                continue  # the stale ones are gone: share out more
            if self._head(others, usable) is not None:
                cutoff = (mine[0][0] if own is not None else now) - self.steal_after_sec
                if others[0][0] <= cutoff:
                    task = self._steal(cutoff, usable)
                    if task is not None:
                        self.steals += 1
                        return task
                    continue
            if own is not None:
                self._queued.discard(mine.popleft()[2])
                return own
            return None

    def steal_in(self) -> float | None:
        """Seconds until the oldest of the others' tasks is due, when no own task is left."""
        if self._mine or self._unsorted or not self._others:
            return None
        return max(0.0, self._others[0][0] + self.steal_after_sec - self._clock())

    # -- internals -----------------------------------------------------------------------

    def _head(self, queue: deque[_Entry], usable: Callable[[str], T | None]) -> T | None:
        """The head of ``queue`` once its ids that cannot be claimed any more are dropped."""
        while queue:
            task = usable(queue[0][2])
            if task is not None:
                return task
            self._queued.discard(queue.popleft()[2])
        return None

    def _steal(self, cutoff: float, usable: Callable[[str], T | None]) -> T | None:
        """Take one of the others' tasks queued at or before ``cutoff`` (at least the head).

        Their owners claim their oldest first, so a task from the younger half of those
        due (among the oldest ``window``) seldom races one of their claims in flight;
        the head itself once it waited ``starve_after_sec`` past due (its owner is gone).
        """
        others = self._others
        if others[0][0] <= cutoff - self.starve_after_sec:
            return self._random(others, 1, usable)
        due = 0
        for when, _, _ in itertools.islice(others, self.window):
            if when > cutoff:
                break
            due += 1
        younger = due // 2
        at = younger + self._rng.randrange(due - younger)
        task_id = others[at][2]
        del others[at]
        self._queued.discard(task_id)
        return usable(task_id)

    def _random(
        self, queue: deque[_Entry], limit: int, usable: Callable[[str], T | None]
    ) -> T | None:
        """Remove random entries of the first ``limit`` (and ``window``) until one is usable."""
        while queue and limit > 0:
            at = self._rng.randrange(min(limit, len(queue), self.window))
            task_id = queue[at][2]
            del queue[at]
            self._queued.discard(task_id)
            limit -= 1
            task = usable(task_id)
            if task is not None:
                return task
        return None

    def _expire(self, now: float) -> None:
        self._next_expiry = now + min(1.0, self.peer_ttl_sec)
        stale = [peer for peer, seen in self._peers.items() if now - seen >= self.peer_ttl_sec]
        if stale:
            for peer in stale:
                del self._peers[peer]
            self._reshape()

    def _reshape(self) -> None:
        """Share the queued ids out again after the claimers changed, keeping their order.

        A long backlog is shared out lazily (:meth:`_share_out`, as far as the next pick
        needs): at about 1.5 us an id, 100,000 of them held the loop for 146 ms.
        """
        self._count = len(self._peers) + 1
        self._peer_hashes = tuple(zlib.crc32(peer.encode()) for peer in self._peers)
        mine, others, unsorted = self._mine, self._others, self._unsorted
        # each side is in order and the unsorted ones are younger: a merge, in C
        entries = sorted(itertools.chain(mine, others))
        entries.extend(unsorted)
        mine.clear()
        others.clear()
        unsorted.clear()
        if len(entries) > _EAGER_RESHAPE:
            unsorted.extend(entries)
            return
        owned = self._owned
        for entry in entries:
            (mine if owned(entry[2]) else others).append(entry)

    def _share_out(self) -> None:
        """Share out the oldest unsorted ids until each side holds a window of them."""
        unsorted, mine, others, window = self._unsorted, self._mine, self._others, self.window
        owned = self._owned
        while unsorted and (len(mine) < window or len(others) < window):
            entry = unsorted.popleft()
            (mine if owned(entry[2]) else others).append(entry)
