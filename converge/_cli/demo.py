"""Built-in demo agents of ``converge run``: a submitter and workers doing a real small job.

The job (:func:`analyze_text`) hashes a text with SHA-256 and counts its words; the
submitter sends ``count`` tasks with generated texts; each worker (a
:class:`~converge.runtime.worker.Worker`) claims pending demo tasks as they appear and
reports the analysis of each. Workers take only demo tasks
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
from converge.core.decisions import Decision, SubmitTask
from converge.core.identity import Identity
from converge.core.message import Message
from converge.core.task import Task
from converge.runtime.worker import Worker

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


class DemoWorker(Worker):
    """Take demo tasks as they appear and report the analysis of each one.

    A :class:`~converge.runtime.worker.Worker`: the runtime claims the PENDING demo
    tasks of its pool (several claims in flight, picks spread over the backlog so
    workers seldom race for one task), runs :meth:`handle` on each and reports the
    result; a claim, a report and any failure are each one event on the task's subject.
    """

    capabilities = [DEMO_CAPABILITY]
    objectives = (DEMO_OBJECTIVE,)
    max_concurrency = 8

    def __init__(self, identity: Identity | None = None, *, pool_id: str | None = None) -> None:
        super().__init__(identity, pool_id=pool_id)
        self.completed = 0

    def accepts(self, task: Task) -> bool:
        """Only demo tasks (never a user's task of the same objective) of its pool."""
        return super().accepts(task) and is_demo_task(task)

    async def handle(self, task: Task) -> dict[str, Any]:
        """Analyse the task's text (a SHA-256 and word counts)."""
        result = analyze_text(str(task.inputs.get("text", "")))
        self.completed += 1
        return result


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
