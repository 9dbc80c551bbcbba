"""``converge tasks|agents|pools`` against a real nats-server, and their bad-input paths."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from typer.testing import CliRunner

from converge.cli import app
from converge.coordination.pool_manager import PoolManager
from converge.coordination.task_manager import TaskManager
from converge.network.discovery import AgentDescriptor, DiscoveryService
from events import JetStreamEventLog

runner = CliRunner()

# -- bad input (no broker needed: refused before connecting) -------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["tasks", "submit"], "OBJECTIVE"),
        (["tasks", "submit", "x", "--input", "{bad"], "--input"),
        (["tasks", "submit", "x", "--input", "[1]"], "JSON object"),
        (["tasks", "submit", "x", "--constraints", '{"timeout_sec": -1}'], "timeout_sec"),
        (["tasks", "submit", "x", "--constraints", '{"nope": 1}'], "nope"),
        (["tasks", "submit", "x", "--file", "-"], "--file"),
        (["tasks", "submit", "--file", "/no/such/file"], "/no/such/file"),
        (["tasks", "ls", "--state", "bogus"], "--state"),
        (["tasks", "wait", "x", "--timeout", "-1"], "--timeout"),
        (["projections", "rebuild", "--as-of", "12"], "--as-of-seq"),
        (["projections", "rebuild", "--as-of", "2026-02-30T00:00"], "--as-of"),
        (["projections", "rebuild", "--as-of", "@soon"], "--as-of"),
        (["projections", "rebuild", "--as-of", "2999-01-01"], "future"),
        (["projections", "rebuild", "--as-of", "@1", "--as-of-seq", "1"], "not both"),
        (["--log-format", "xml", "tasks", "ls"], "--log-format"),
        (["events", "schema", "--type", "no.such"], "no.such"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args, env={"CONVERGE_CONFIG": ""}, input="")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1, result.output
    assert needle in errors[0], result.output


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        ('{"objective": "a"}\nnot json\n', "line 2"),
        ('{"objective": "a", "colour": "red"}\n', "colour"),
        ('{"inputs": {}}\n', "objective"),
        ("[1, 2]\n", "line 1"),
    ],
)
def test_bad_task_lines_submit_nothing(lines: str, needle: str) -> None:
    result = runner.invoke(app, ["tasks", "submit", "--file", "-"], input=lines)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and needle in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("converge ")


# -- against the real server -------------------------------------------------------


def _json(output: str) -> object:  # stdout only: progress and messages go to stderr
    return orjson.loads(output)


async def _complete(url: str, namespace: str, task_id: str, result: object) -> None:
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    try:
        async with TaskManager(log) as tm:
            assert await tm.claim("agent-a", task_id)
            await tm.report("agent-a", task_id, result)
    finally:
        await log.close()


async def _register(url: str, namespace: str) -> None:
    log = await JetStreamEventLog.connect(url, namespace=namespace)
    try:
        async with DiscoveryService(log) as discovery, PoolManager(log) as pools:
            await discovery.register(
                AgentDescriptor("agent-a", topics=["docs"], capabilities=["summarise"])
            )
            await pools.create_pool({"id": "docs"})
            await pools.join_pool("agent-a", "docs")
    finally:
        await log.close()


@pytest.mark.nats
def test_task_lifecycle_from_the_cli(nats_url: str, namespace: str) -> None:
    common = ["--url", nats_url, "--namespace", namespace]
    result = runner.invoke(
        app,
        [
            *("tasks", "submit", "summarise", "--input", '{"text": "hi"}', "--pool", "docs"),
            *("--capability", "summarise", "--constraints", '{"timeout_sec": 30}', *common),
        ],
    )
    assert result.exit_code == 0, result.output
    first = result.output.strip()
    lines = '{"objective": "a", "inputs": {"n": 1}}\n\n{"objective": "b", "id": "task-b"}\n'
    result = runner.invoke(app, ["tasks", "submit", "--file", "-", *common], input=lines)
    assert result.exit_code == 0, result.output
    second, third = result.output.split()
    assert third == "task-b"

    result = runner.invoke(app, ["tasks", "ls", "--json", *common])
    assert result.exit_code == 0, result.output
    rows = _json(result.output)
    assert isinstance(rows, list)
    assert [r["id"] for r in rows] == [first, second, third]
    assert all(r["state"] == "pending" and r["assigned_to"] is None for r in rows)
    assert rows[0]["required_capabilities"] == ["summarise"] and rows[0]["pool_id"] == "docs"

    result = runner.invoke(app, ["tasks", "ls", *common])  # the table
    assert result.exit_code == 0 and first in result.output and "pending" in result.output

    asyncio.run(_complete(nats_url, namespace, first, {"summary": "hello"}))
    result = runner.invoke(app, ["tasks", "wait", first, "--timeout", "30", *common])
    assert result.exit_code == 0, result.output
    assert _json(result.output) == {"summary": "hello"}

    result = runner.invoke(app, ["tasks", "show", first, "--json", *common])
    assert result.exit_code == 0, result.output
    shown = _json(result.output)
    assert isinstance(shown, dict) and shown["state"] == "completed"
    assert [e["type"] for e in shown["events"]] == [
        "task.submitted",
        "task.claimed",
        "task.reported",
    ]

    result = runner.invoke(app, ["tasks", "cancel", second, *common])
    assert result.exit_code == 0 and "cancelled" in result.output
    result = runner.invoke(app, ["tasks", "cancel", second, *common])
    assert result.exit_code == 1 and result.output.startswith("error: ")
    result = runner.invoke(app, ["tasks", "wait", second, *common])
    assert result.exit_code == 1 and "cancelled" in result.output

    result = runner.invoke(app, ["tasks", "wait", third, "--timeout", "0.2", *common])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert "task-b" in result.output

    for state, expected in (("completed", [first]), ("cancelled", [second])):
        result = runner.invoke(app, ["tasks", "ls", "--state", state, "--json", *common])
        assert [r["id"] for r in _json(result.output)] == expected  # type: ignore[union-attr]
    result = runner.invoke(app, ["tasks", "ls", "--agent", "agent-a", "--json", *common])
    assert [r["id"] for r in _json(result.output)] == [first]  # type: ignore[union-attr]

    result = runner.invoke(app, ["tasks", "sweep", "--json", *common])
    assert result.exit_code == 0 and _json(result.output) == []

    for args in (["tasks", "show", "nope"], ["tasks", "wait", "nope"], ["pools", "show", "x"]):
        result = runner.invoke(app, [*args, *common])
        assert result.exit_code == 1 and result.output.startswith("error: ")
        assert len(result.output.strip().splitlines()) == 1


@pytest.mark.nats
def test_agents_and_pools_listings(nats_url: str, namespace: str) -> None:
    common = ["--url", nats_url, "--namespace", namespace]
    # Inspection never creates streams: a namespace nobody wrote to is named, exit 1.
    for args in (["agents", "ls"], ["tasks", "ls"], ["pools", "ls"]):
        result = runner.invoke(app, [*args, "--json", *common])
        assert result.exit_code == 1, result.output
        assert result.output.startswith("error: ") and namespace in result.output
        assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["replay", *common])
    assert result.exit_code == 1 and namespace in result.output
    result = runner.invoke(app, ["streams", "ls", "--json", *common])  # what is there: nothing
    assert result.exit_code == 0 and _json(result.stdout) == []
    asyncio.run(_register(nats_url, namespace))
    result = runner.invoke(app, ["replay", "--stream", "bogus", *common])
    assert result.exit_code == 1 and "BOGUS" in result.output.upper(), result.output

    result = runner.invoke(app, ["agents", "ls", "--json", *common])
    assert result.exit_code == 0, result.output
    assert _json(result.output) == [
        {"id": "agent-a", "capabilities": ["summarise"], "topics": ["docs"], "metadata": {}}
    ]
    result = runner.invoke(app, ["agents", "ls", *common])
    assert result.exit_code == 0 and "agent-a" in result.output and "summarise" in result.output

    result = runner.invoke(app, ["pools", "ls", "--json", *common])
    assert result.exit_code == 0, result.output
    pools = _json(result.output)
    assert isinstance(pools, list) and [p["id"] for p in pools] == ["docs"]
    assert pools[0]["agents"] == ["agent-a"]
    result = runner.invoke(app, ["pools", "ls", *common])
    assert result.exit_code == 0 and "docs" in result.output
    result = runner.invoke(app, ["pools", "show", "docs", "--json", *common])
    assert result.exit_code == 0 and _json(result.output)["agents"] == ["agent-a"]  # type: ignore[index]

    result = runner.invoke(app, ["streams", "ls", "--json", *common])
    assert result.exit_code == 0, result.output
    streams = _json(result.output)
    assert isinstance(streams, list)
    assert {f"{namespace.upper()}_AGENTS", f"{namespace.upper()}_POOLS"} <= {
        s["name"] for s in streams
    }
