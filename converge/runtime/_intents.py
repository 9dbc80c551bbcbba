"""The claims the agents of one process are about to make, so they do not race each other.

A ``decide()`` agent claims tasks it is shown, and its executor runs a tick's decisions
one after another, each claim a round trip to the broker. Meanwhile the other agents of
the process tick, are shown the same oldest PENDING tasks and claim them too: each such
claim waits for the first, finds the task taken, and is recorded as a lost ``claim_task``
decision (with four agents, most claims were). So the executor notes a tick's claims here
before it runs them, and the runtime leaves out of what an agent is shown the tasks
another agent of this process is about to claim; a task whose claim fails is shown again
at the next tick. Agents of other processes are not covered: their claims race through
the log as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from weakref import WeakKeyDictionary

__all__ = ["claims_of_others", "forget_claims", "note_claims"]

# task manager -> task id -> the agent about to claim it
_INTENTS: WeakKeyDictionary[object, dict[str, str]] = WeakKeyDictionary()
_NONE: Mapping[str, str] = {}


def note_claims(task_manager: object, agent_id: str, task_ids: Iterable[str]) -> list[str]:
    """Note that ``agent_id`` is about to claim ``task_ids``; return the ids noted for it.

    An id another agent noted first stays that agent's (the second claim just loses).
    """
    intents = _INTENTS.get(task_manager)
    if intents is None:
        intents = _INTENTS[task_manager] = {}
    noted = []
    for task_id in task_ids:
        if intents.setdefault(task_id, agent_id) == agent_id:
            noted.append(task_id)
    return noted


def forget_claims(task_manager: object, agent_id: str, task_ids: Iterable[str]) -> None:
    """Forget the claims ``agent_id`` noted on ``task_ids`` (made, lost or not run)."""
    intents = _INTENTS.get(task_manager)
    if not intents:
        return
    for task_id in task_ids:
        if intents.get(task_id) == agent_id:
            del intents[task_id]


def claims_of_others(task_manager: object) -> Mapping[str, str]:
    """The claims noted on ``task_manager``: task id -> the agent about to make it."""
    return _INTENTS.get(task_manager, _NONE)
