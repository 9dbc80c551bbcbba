"""The converge CLI against a real nats-server (CliRunner), including bad-argument paths."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from converge.cli import app

runner = CliRunner()

# -- bad arguments (no broker needed) -----------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--agents", "0"], "--agents"),
        (["run", "--transport", "pigeon"], "transport"),
        (["run", "--namespace", "a.b"], "namespace"),
        (["run", "--url", "localhost:4222"], "scheme"),
        (["replay", "--start-seq", "5", "--end-seq", "2"], "--end-seq"),
        (["replay", "--stream", "bad stream"], "bad stream"),
        (["replay", "--start-time", "yesterday"], "--start-time"),
        (["projections", "rebuild", "--as-of", "soon"], "--as-of"),
        (["streams", "info", "no.such"], "no.such"),
        (["server", "--port", "-3"], "--port"),
        (["nonsense"], "No such command"),
    ],
)
def test_bad_arguments_exit_2_with_one_error_line(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args, env={"CONVERGE_CONFIG": ""})
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.output.splitlines() if line.lower().startswith("error")]
    assert len(error_lines) == 1, result.output
    assert needle in error_lines[0]


def test_bad_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("agents: [\n")
    result = runner.invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "not valid YAML" in result.output


def test_unreachable_broker_exits_1_with_one_line() -> None:
    result = runner.invoke(app, ["replay", "--url", "nats://127.0.0.1:1", "--stream", "tasks"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "127.0.0.1:1" in lines[0]


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("run", "replay", "projections", "streams", "server"):
        assert name in result.output


# -- against the real server --------------------------------------------------


def _lines(output: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.mark.nats
def test_run_then_replay_projections_and_streams(nats_url: str, namespace: str) -> None:
    common = ["--url", nats_url, "--namespace", namespace]
    result = runner.invoke(
        app, ["run", *common, "--agents", "3", "--tasks", "6", "--duration", "90", "-q"]
    )
    assert result.exit_code == 0, result.output
    summary = _lines(result.output)[-1]
    assert summary["tasks"] == 6 and summary["states"] == {"completed": 6}
    per_worker = summary["per_worker"]
    assert isinstance(per_worker, dict) and sum(per_worker.values()) == 6
    sample = summary["sample_result"]
    assert isinstance(sample, dict) and len(str(sample["sha256"])) == 64

    result = runner.invoke(app, ["replay", *common, "--stream", "tasks"])
    assert result.exit_code == 0, result.output
    events = _lines(result.output)
    types = [e["type"] for e in events]
    assert types.count("task.submitted") == 6 and types.count("task.reported") == 6
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)  # type: ignore[type-var]

    result = runner.invoke(app, ["replay", *common, "--subject", "decisions.>", "--limit", "3"])
    assert result.exit_code == 0 and len(_lines(result.output)) == 3
    assert all(e["type"] == "decision.executed" for e in _lines(result.output))

    result = runner.invoke(app, ["projections", "rebuild", *common])
    assert result.exit_code == 0, result.output
    state = orjson.loads(result.stdout)
    assert state["tasks"]["total"] == 6 and state["tasks"]["by_state"] == {"completed": 6}
    assert state["pools"]["total"] == 1

    # As of the sequence before the first report, no task is completed. Workers claim
    # while the submitter still submits, so only the replayed history says how many
    # tasks were submitted by then.
    history = [(int(str(e["seq"])), e["type"]) for e in events]
    first_report = min(seq for seq, kind in history if kind == "task.reported")
    submitted_before = [s for s, kind in history if kind == "task.submitted" and s < first_report]
    result = runner.invoke(
        app, ["projections", "rebuild", *common, "--as-of-seq", str(first_report - 1)]
    )
    assert result.exit_code == 0, result.output
    early = orjson.loads(result.stdout)
    assert early["tasks"]["total"] == len(submitted_before) >= 1
    assert "completed" not in early["tasks"]["by_state"]

    result = runner.invoke(app, ["projections", "status", *common])
    assert result.exit_code == 0 and orjson.loads(result.output)["up_to_date"] is True

    result = runner.invoke(app, ["streams", "ls", *common])
    assert result.exit_code == 0, result.output
    assert f"{namespace.upper()}_TASKS" in result.output
    result = runner.invoke(app, ["streams", "info", "tasks", *common])
    assert result.exit_code == 0, result.output
    info = orjson.loads(result.output)
    assert info["name"] == f"{namespace.upper()}_TASKS" and info["messages"] >= 18


@pytest.mark.nats
def test_streams_info_unknown_stream(nats_url: str, namespace: str) -> None:
    common = ["--url", nats_url, "--namespace", namespace]
    result = runner.invoke(app, ["streams", "info", "nothing", *common])
    assert result.exit_code == 1  # nobody wrote to the namespace, and reading creates nothing
    assert result.output.startswith("error: ") and namespace in result.output
    assert runner.invoke(app, ["tasks", "submit", "x", *common]).exit_code == 0
    result = runner.invoke(app, ["streams", "info", "nothing", *common])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "streams ls" in result.output
    assert "NOTHING" in result.output


@pytest.mark.nats
def test_run_with_embedded_server_then_replay_reads_it(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "state")]
    result = runner.invoke(
        app, ["run", *data, "--agents", "2", "--tasks", "3", "--duration", "60", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert _lines(result.output)[-1]["states"] == {"completed": 3}
    assert (tmp_path / "state" / "nats" / "jetstream").is_dir()
    result = runner.invoke(app, ["replay", *data, "--stream", "tasks"])
    assert result.exit_code == 0, result.output
    assert [e["type"] for e in _lines(result.output)].count("task.reported") == 3


@pytest.mark.nats
@pytest.mark.asyncio
async def test_server_runs_in_foreground_until_interrupted(tmp_path: Path) -> None:
    import asyncio
    import signal
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "converge",
        "server",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode()
        assert "nats://" in line, line
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        host, port = url.removeprefix("nats://").rsplit(":", 1)
        _, writer = await asyncio.open_connection(host, int(port))
        writer.close()
        await writer.wait_closed()
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            code = await proc.wait()
        assert code == 0
        assert (tmp_path / "nats" / "jetstream").is_dir()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.nats
def test_run_without_tasks_stops_at_duration(nats_url: str, namespace: str) -> None:
    result = runner.invoke(
        app,
        ["run", "--url", nats_url, "--namespace", namespace, "--tasks", "0", "-d", "0.3", "-q"],
    )
    assert result.exit_code == 0, result.output
    summary = _lines(result.output)[-1]
    assert summary["tasks"] == 0 and summary["states"] == {}


@pytest.mark.nats
def test_config_file_drives_run(tmp_path: Path, nats_url: str, namespace: str) -> None:
    path = tmp_path / "converge.toml"
    path.write_text(
        f'nats_url = "{nats_url}"\nnamespace = "{namespace}"\nagents = 1\ntasks = 2\n'
        'pool_id = "from-file"\n'
    )
    result = runner.invoke(app, ["run", "--config", str(path), "-q", "-d", "60"])
    assert result.exit_code == 0, result.output
    assert _lines(result.output)[-1]["states"] == {"completed": 2}
    result = runner.invoke(app, ["projections", "status", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "from-file" in orjson.loads(result.output)["pools"]["agents"]


@pytest.mark.nats
def test_run_with_nats_transport(nats_url: str, namespace: str) -> None:
    result = runner.invoke(
        app,
        [
            *("run", "--url", nats_url, "--namespace", namespace, "--transport", "nats"),
            *("--agents", "2", "--tasks", "3", "-d", "60", "-q"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert _lines(result.output)[-1]["states"] == {"completed": 3}


@pytest.mark.nats
def test_streams_update_applies_the_configuration(nats_url: str, namespace: str) -> None:
    async def provision_with_a_short_dedupe_window() -> None:
        from events import JetStreamEventLog

        log = await JetStreamEventLog.connect(
            nats_url, namespace=namespace, duplicate_window_sec=30
        )
        await log.close()

    asyncio.run(provision_with_a_short_dedupe_window())
    common = ["--url", nats_url, "--namespace", namespace]
    result = runner.invoke(app, ["streams", "info", "tasks", *common])
    assert orjson.loads(result.output)["config"]["duplicate_window"] == 30  # left as it is
    result = runner.invoke(app, ["streams", "update", *common])
    assert result.exit_code == 0, result.output
    assert f"{namespace.upper()}_TASKS: duplicate_window_sec 30.0 -> 120.0" in result.output
    result = runner.invoke(app, ["streams", "update", *common])
    assert f"{namespace.upper()}_TASKS: up to date" in result.output
