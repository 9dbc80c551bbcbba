"""A user's own agent module, served in a container by the compose service `my-agents`:

    converge run word_stats:WordStats=2

The agents' image puts /home/converge/agents on PYTHONPATH; compose mounts this folder
there. WordStats takes the demo's text-analysis tasks beside the demo workers.
"""

from __future__ import annotations

from converge.core.task import Task
from converge.runtime.worker import Worker


class WordStats(Worker):
    """Count the words of a demo task's text and name its longest word."""

    capabilities = ["text-analysis"]
    objectives = ["analyze-text"]
    max_concurrency = 4

    async def handle(self, task: Task) -> dict[str, object]:
        words = str(task.inputs.get("text", "")).split()
        return {"words": len(words), "longest": max(words, key=len, default=""), "by": "word_stats"}
