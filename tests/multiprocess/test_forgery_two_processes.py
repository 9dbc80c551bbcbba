"""``converge run`` with default settings refuses what an attacker process publishes.

Processes: ``converge run`` records the namespace's signature policy and runs; the test
process is the operator (the service key of the data directory) and an honest agent
holding a task; an attacker process with publish rights forges events with raw nats-py
and with a converge log under its own key; a second ``converge run`` catches up through
the forgeries; ``converge projections status`` and ``tasks show`` report. Everyone
agrees on the true state, and the refusals are counted per reason.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from converge.coordination import TaskManager
from converge.core import Identity, Task, TaskState
from converge.security import EventSecurity
from events import JetStreamEventLog

pytestmark = [pytest.mark.nats, pytest.mark.asyncio]

ATTACKER = textwrap.dedent(
    """
    import asyncio, sys, time

    import nats

    from converge.core import Identity
    from events import (
        EventSigner, JetStreamEventLog, TaskCancelled, TaskClaimed, TaskReported, encode_event,
        subject,
    )

    async def main(url, namespace, victim, held, free):
        loot = {"paid_to": "mallory"}
        # 1. raw nats-py: an unsigned report in the victim's name
        body, headers = encode_event(TaskReported(task_id=held, agent_id=victim, result=loot))
        nc = await nats.connect(url)
        await nc.jetstream().publish(
            f"{namespace}.{subject('tasks', held)}", body, headers=headers
        )
        await nc.close()
        # 2. a converge log under mallory's own (valid, self-certifying) key
        mallory = EventSigner.from_identity(Identity.generate())
        log = await JetStreamEventLog.connect(url, namespace=namespace, signer=mallory)
        try:
            # the impersonating report: the victim's id in agent_id, actor left empty
            await log.append(
                TaskReported(task_id=held, agent_id=victim, result=loot),
                subject=subject("tasks", held),
            )
            await log.append(
                TaskClaimed(task_id=free, agent_id=victim, claimed_at=time.time()),
                subject=subject("tasks", free),
            )
            await log.append(TaskCancelled(task_id=held), subject=subject("tasks", held))
        finally:
            await log.close()
        print("attacked", flush=True)

    asyncio.run(main(*sys.argv[1:]))
    """
)

EXPECTED_REJECTIONS = {"unsigned": 1, "impersonation": 2, "untrusted-signer": 1}


async def converge(*args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """Run ``python -m converge *args``; return its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "converge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(), err.decode()


def last_json(text: str) -> dict[str, Any]:
    """Return the JSON document ``text`` is, or its last one-line JSON object."""
    try:
        whole: dict[str, Any] = orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    else:
        return whole
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, text
    parsed: dict[str, Any] = orjson.loads(lines[-1])
    return parsed


async def test_forgeries_from_another_process_are_refused_by_converge_run(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    common = ["--url", nats_url, "--namespace", namespace, "--data-dir", str(tmp_path)]
    # converge run, default settings: records the policy (trusting its service key) and works
    code, out, err = await converge("run", *common, "--tasks", "1", "-q")
    assert code == 0, err
    assert last_json(out)["states"] == {"completed": 1}

    # the operator (same data directory: the service key) and an honest agent elsewhere
    security = EventSecurity.signing(tmp_path / "keys" / "service.key")
    victim = Identity.generate()
    security.enroll(victim)
    log = await JetStreamEventLog.connect(nats_url, namespace=namespace, signer=security.ring)
    try:
        policy = await security.load_policy(log, record=False)
        assert policy is not None and policy.require_signatures
        async with TaskManager(log, verifier=security.verifier()) as tm:
            held = await tm.submit(Task("pay", {"amount": 5}))
            free = await tm.submit(Task("other"))
            assert await tm.claim(victim.fingerprint, held)

            # the attacker process
            script = tmp_path / "attacker.py"
            script.write_text(ATTACKER)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(script),
                nats_url,
                namespace,
                victim.fingerprint,
                held,
                free,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            async with asyncio.timeout(60):
                out_b, err_b = await proc.communicate()
            assert proc.returncode == 0, err_b.decode()
            assert out_b.decode().strip() == "attacked"

            # a second converge run (default settings) catches up through the forgeries
            code, out, err = await converge("run", *common, "--tasks", "1", "-q")
            assert code == 0, err
            summary = last_json(out)
            assert summary["states"] == {"completed": 1}
            assert summary["rejected_events"] == sum(EXPECTED_REJECTIONS.values())

            # inspection processes verify too
            code, out, err = await converge("projections", "status", *common)
            assert code == 0, err
            signatures = last_json(out)["signatures"]
            assert signatures["require_signatures"] is True
            assert signatures["rejected_by_reason"] == EXPECTED_REJECTIONS
            recent = signatures["recent_rejections"]
            assert {r["subject"] for r in recent} == {f"tasks.{held}", f"tasks.{free}"}
            assert all(r["sequence"] > 0 for r in recent)

            code, out, err = await converge("tasks", "show", held, "--json", *common)
            assert code == 0, err
            shown = last_json(out)
            assert shown["state"] == "assigned" and shown["assigned_to"] == victim.fingerprint
            assert shown["result"] is None

            # this process refused them too, and the holder still completes its task
            await tm.sync()
            assert tm.runner.rejected_events == sum(EXPECTED_REJECTIONS.values())
            await tm.report(victim.fingerprint, held, {"paid_to": "victim"})
            task = tm.get_task(held)
            assert task is not None and task.state is TaskState.COMPLETED
            assert task.result == {"paid_to": "victim"}
            other = tm.get_task(free)
            assert other is not None and other.state is TaskState.PENDING
    finally:
        await log.close()
