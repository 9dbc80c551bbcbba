"""``converge tasks|agents|pools``: submit, list, show, wait for, cancel and sweep tasks;
list agents and pools.

Bad input (JSON, states, constraints) exits 2 with one line before anything is sent;
an unknown id or an unreachable broker exits 1 with one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from converge._cli import ops
from converge._cli.common import execute, fail, one_line, setup, usage_error
from converge._cli.options import ConfigOpt, DataDirOpt, JsonOpt, NamespaceOpt, UrlOpt
from converge._cli.output import console, print_json, print_table
from converge.core.task import Task, TaskState, validate_constraints
from converge.errors import ConvergeError

__all__ = ["agents_app", "pools_app", "tasks_app"]

tasks_app = typer.Typer(
    help="Submit, list, inspect, wait for and cancel tasks.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
agents_app = typer.Typer(
    help="The agents registered with discovery.", no_args_is_help=True, rich_markup_mode=None
)
pools_app = typer.Typer(
    help="The pools and their members.", no_args_is_help=True, rich_markup_mode=None
)

TASK_COLUMNS = ("id", "state", "objective", "pool_id", "assigned_to", "result")
_TASK_FIELDS = {
    "id",
    "objective",
    "inputs",
    "pool_id",
    "required_capabilities",
    "constraints",
    "topic",
    "evaluator",
}


def _json_object(value: str, option: str) -> dict[str, Any]:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        usage_error(f"{option} is not valid JSON: {exc}")
    if not isinstance(data, dict):
        usage_error(f"{option} must be a JSON object, got {type(data).__name__}")
    return data


def _task_from(data: dict[str, Any], where: str) -> Task:
    unknown = sorted(set(data) - _TASK_FIELDS)
    if unknown:
        usage_error(f"{where}: unknown Task field(s) {', '.join(unknown)}")
    if "objective" not in data:
        usage_error(f"{where}: a task needs an 'objective'")
    try:
        if "constraints" in data:
            validate_constraints(data["constraints"])
        return Task(**data)
    except (ConvergeError, TypeError, ValueError) as exc:
        usage_error(f"{where}: {one_line(exc)}")


def _read_lines(file: str) -> list[Task]:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        usage_error(f"--file {file!r}: {one_line(exc)}")
    where = "stdin" if file == "-" else file
    tasks = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            tasks.append(
                _task_from(_json_object(line, f"{where} line {number}"), f"{where} line {number}")
            )
    if not tasks:
        usage_error(f"--file {file!r} holds no task lines")
    return tasks


@tasks_app.command("submit")
def submit(
    objective: Annotated[str | None, typer.Argument(help="What the task is for.")] = None,
    inputs: Annotated[str | None, typer.Option("--input", help="Inputs, a JSON object.")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Pool id.")] = None,
    capability: Annotated[
        list[str] | None, typer.Option("--capability", help="A required capability (repeat).")
    ] = None,
    constraints: Annotated[
        str | None, typer.Option("--constraints", help="Constraints, a JSON object.")
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="JSON lines of tasks; '-' reads stdin.")
    ] = None,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Submit a task (or one per line of --file) and print its id."""
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    if file is not None:
        if objective is not None or inputs or pool or capability or constraints:
            usage_error("--file takes the tasks from the file; give no OBJECTIVE or task options")
        tasks = _read_lines(file)
    else:
        if objective is None:
            usage_error("give an OBJECTIVE or --file")
        data: dict[str, Any] = {"objective": objective}
        if inputs is not None:
            data["inputs"] = _json_object(inputs, "--input")
        if pool is not None:
            data["pool_id"] = pool
        if capability:
            data["required_capabilities"] = list(capability)
        if constraints is not None:
            data["constraints"] = _json_object(constraints, "--constraints")
        tasks = [_task_from(data, "task")]
    for task_id in execute(lambda: ops.submit_tasks(cfg, tasks)):
        typer.echo(task_id)


def _state(value: str | None) -> TaskState | None:
    if value is None:
        return None
    try:
        return TaskState(value.lower())
    except ValueError:
        usage_error(f"--state {value!r}: one of {', '.join(s.value for s in TaskState)}")


@tasks_app.command("ls")
def tasks_ls(
    state: Annotated[str | None, typer.Option("--state", help="pending, assigned, ...")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Only this pool's tasks.")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only tasks held by it.")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List the tasks, oldest first."""
    wanted = _state(state)
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    rows = execute(lambda: ops.task_rows(cfg, state=wanted, pool=pool, agent=agent))
    print_table(rows, TASK_COLUMNS, as_json=as_json, empty=f"no tasks in {cfg.namespace!r}")


@tasks_app.command("show")
def tasks_show(
    task_id: Annotated[str, typer.Argument(help="The id.")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Show a task and its event history."""
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    row = execute(lambda: ops.task_history(cfg, task_id))
    if as_json:
        print_json(row)
        return
    events = row.pop("events")
    out = console()
    for key, value in row.items():
        out.print(f"{key + ':':<24}{orjson.dumps(value, default=str).decode()}")
    out.print()
    print_table(events, ("seq", "time", "type", "actor", "data"), as_json=False, empty="")


@tasks_app.command("wait")
def tasks_wait(
    task_id: Annotated[str, typer.Argument(help="The id.")],
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.0, help="Give up after S seconds.")
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Wait until a task is finished and print its result; exit 1 unless it completed."""
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    task = execute(lambda: ops.wait_task(cfg, task_id, timeout))
    if as_json:
        print_json(ops.task_row(task))
    else:
        print_json(task.result)
    if task.state is not TaskState.COMPLETED:
        fail(f"task {task_id!r} {task.state.value}")


@tasks_app.command("cancel")
def tasks_cancel(
    task_id: Annotated[str, typer.Argument(help="The id.")],
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Cancel a pending or assigned task."""
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    task = execute(lambda: ops.cancel_task(cfg, task_id))
    typer.echo(f"{task.id} {task.state.value}")


@tasks_app.command("sweep")
def tasks_sweep(
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Release every expired claim back to pending; print the ids released."""
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    released = execute(lambda: ops.sweep_claims(cfg))
    if as_json:
        print_json([{"id": task_id} for task_id in released])
        return
    for task_id in released:
        typer.echo(task_id)
    console(stderr=True).print(f"released {len(released)} expired claim(s)")


@agents_app.command("ls")
def agents_ls(
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List the agents registered with discovery."""
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    rows = execute(lambda: ops.agent_rows(cfg))
    print_table(
        rows,
        ("id", "capabilities", "topics"),
        as_json=as_json,
        empty=f"no agents registered in {cfg.namespace!r}",
    )


@pools_app.command("ls")
def pools_ls(
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List the pools and their members."""
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    rows = execute(lambda: ops.pool_rows(cfg))
    shown = [{**row, "members": len(row["agents"])} for row in rows]
    print_table(
        shown if not as_json else rows,
        ("id", "members", "topics", "trust_threshold"),
        as_json=as_json,
        empty=f"no pools in {cfg.namespace!r}",
    )


@pools_app.command("show")
def pools_show(
    pool_id: Annotated[str, typer.Argument(help="The id.")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    config: ConfigOpt = None,
    namespace: NamespaceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Show one pool: its policies and members."""
    cfg = setup(config, nats_url=url, namespace=namespace, data_dir=data_dir)
    rows = execute(lambda: ops.pool_rows(cfg))
    row = next((r for r in rows if r["id"] == pool_id), None)
    if row is None:
        fail(f"no pool {pool_id!r} in namespace {cfg.namespace!r}; see `converge pools ls`")
    if as_json:
        print_json(row)
        return
    out = console()
    for key, value in row.items():
        out.print(f"{key + ':':<20}{orjson.dumps(value, default=str).decode()}")
