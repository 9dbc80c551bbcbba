"""A user's own agent module, served in a container by the compose service `my-agents`:

    converge run word_stats:WordStats=2

The agents' image puts /home/converge/agents on PYTHONPATH; compose mounts this folder
there. WordStats takes `analyze-text` tasks in no pool, for example from the host:

    converge tasks submit analyze-text --input '{"text": "hello there"}' \
      --url nats://127.0.0.1:4222

Agents named on the command line join no pool, so the demo's tasks (pool `demo`) are
left to the demo workers; a config file's `agents:` list gives served agents a pool.
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
