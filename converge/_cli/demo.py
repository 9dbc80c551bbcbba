"""Built-in demo agents of ``converge run``: a submitter and workers doing a real small job.

The job (:func:`analyze_text`) hashes a text with SHA-256 and counts its words; the
submitter sends ``count`` tasks with generated texts, each worker claims one pending task
per tick and reports the analysis of each task it holds. Workers take only demo tasks
(objective :data:`DEMO_OBJECTIVE` requiring :data:`DEMO_CAPABILITY`), never a user's
task in the same namespace.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from converge.core.agent import Agent
from converge.core.decisions import ClaimTask, Decision, ReportTask, SubmitTask
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task, TaskState

__all__ = [
    "DEMO_CAPABILITY",
    "DEMO_OBJECTIVE",
    "DemoSubmitter",
    "DemoWorker",
    "analyze_text",
    "demo_texts",
    "is_demo_task",
]

logger = logging.getLogger(__name__)

DEMO_CAPABILITY = "text-analysis"
"""Capability the demo tasks require and the demo workers offer."""

DEMO_OBJECTIVE = "analyze-text"
"""Objective of every demo task."""


def is_demo_task(task: Task) -> bool:
    """Return whether ``task`` is a demo task (its objective and required capability)."""
    return task.objective == DEMO_OBJECTIVE and DEMO_CAPABILITY in task.required_capabilities


_WORD = re.compile(r"[A-Za-z0-9']+")

_VOCABULARY = (
    "agent",
    "event",
    "stream",
    "broker",
    "claim",
    "report",
    "pool",
    "task",
    "replay",
    "projection",
    "cluster",
    "consensus",
    "auction",
    "bid",
    "vote",
    "negotiate",
    "delegate",
    "identity",
    "signature",
    "message",
    "topic",
)


def analyze_text(text: str, *, top: int = 3) -> dict[str, Any]:
    """Return the SHA-256 of ``text`` (UTF-8), its word and character counts, top words."""
    words = [w.lower() for w in _WORD.findall(text)]
    return {
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "words": len(words),
        "chars": len(text),
        "top_words": [[w, n] for w, n in Counter(words).most_common(top)],
    }


def demo_texts(count: int, *, seed: int = 7) -> list[str]:
    """Return ``count`` reproducible pseudo-random sentences."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(_VOCABULARY) for _ in range(rng.randint(5, 40))) for _ in range(count)
    ]


class DemoWorker(Agent):
    """Claim one pending demo task per tick and report the analysis of held tasks."""

    def __init__(self, identity: Identity | None = None, *, pool_id: str | None = None) -> None:
        super().__init__(identity or Identity.generate(), capabilities=[DEMO_CAPABILITY])
        self.pool_id = pool_id
        self.completed = 0
        self.claim_window = 16
        self._tried: set[str] = set()
        self._rng = random.Random(self.id)

    def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        """Report held tasks; claim a pending demo task not tried yet.

        The runtime passes the pending tasks this agent may claim followed by the tasks
        it holds, so no tick scans the whole backlog.
        """
        out: list[Decision] = []
        untried = []
        for task in tasks:
            if task.state is TaskState.ASSIGNED and task.assigned_to == self.id:
                text = str(task.inputs.get("text", ""))
                out.append(ReportTask(task.id, analyze_text(text)))
                self.completed += 1
            elif (
                task.state is TaskState.PENDING
                and task.id not in self._tried
                and is_demo_task(task)
            ):
                untried.append(task)
        if untried:
            # A random pick spreads the workers over the backlog instead of all racing
            # for the oldest task.
            task = self._rng.choice(untried[: self.claim_window])
            self._tried.add(task.id)
            out.append(ClaimTask(task.id))
        return out


class DemoSubmitter(Agent):
    """Submit the demo tasks once, then nothing; ``task_ids`` lists what it submitted."""

    def __init__(
        self,
        count: int,
        identity: Identity | None = None,
        *,
        pool_id: str | None = None,
        seed: int = 7,
    ) -> None:
        super().__init__(identity or Identity.generate())
        self.tasks_to_submit = [
            Task(
                objective=DEMO_OBJECTIVE,
                inputs={"text": text},
                pool_id=pool_id,
                required_capabilities=[DEMO_CAPABILITY],
            )
            for text in demo_texts(count, seed=seed)
        ]
        self.task_ids = [t.id for t in self.tasks_to_submit]
        self._submitted = False

    def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        """Submit every demo task on the first tick."""
        if self._submitted:
            return []
        self._submitted = True
        return [SubmitTask(task) for task in self.tasks_to_submit]
