"""The ``run`` command's wiring: managers, agents (the demo's or the user's), their
transports and runtimes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import typer

from converge._cli.broker import connected, stop_signals
from converge._cli.loader import LoadedSpec
from converge._cli.output import ProgressReporter
from converge.config import ConvergeConfig
from converge.core.agent import Agent
from converge.errors import ConfigError, ConvergeError, StorageFullError
from converge.network.transport.mesh import start_mesh
from events import EventLog, RecordedEvent

if TYPE_CHECKING:
    from converge.security import EventSecurity

__all__ = ["LOOPBACK", "checkpoint_store", "discovery", "make_transports", "run", "run_agents"]

# Logged as the command line module, as before these helpers moved here.
logger = logging.getLogger("converge.cli")

LOOPBACK = "127.0.0.1"


async def run(
    cfg: ConvergeConfig,
    duration: float | None,
    quiet: bool,
    agents: list[tuple[Agent, LoadedSpec]] | None = None,
    drain_timeout_sec: float = 10.0,
) -> dict[str, Any]:
    """Run the demo, or serve ``agents``, until done, ``duration`` or SIGINT/SIGTERM.

    Returns a summary. Given agents serve until a signal or ``duration``, idle or not;
    a signal drains them (see :func:`converge._cli.serve.serve_agents`). Every event is
    signed (each agent's by its own key) and verified (docs/security.md).
    """
    from converge.security import EventSecurity

    stop = asyncio.Event()
    security = EventSecurity.signing(cfg.signing_key_path, verify=cfg.verify)
    # Served agents get their drain time on top of the rest of the shutdown.
    limit = cfg.shutdown_timeout_sec
    if agents is not None:
        limit = max(limit, drain_timeout_sec + 5.0)
    with stop_signals(stop, limit):
        # A run outlives the owner of a shared data directory: it takes the server over.
        async with connected(cfg, signer=security.ring, take_over=True) as (log, url):
            await security.load_policy(
                log,
                record=True,
                require_signatures=cfg.require_signatures,
                trusted_signers=cfg.trusted_signers,
                strict=True,  # its pool creation and sweeps refused: fail now, never hang
            )
            if agents is not None:
                from converge._cli.serve import serve_agents

                for agent, _ in agents:
                    security.enroll(agent.identity)
                return await serve_agents(
                    cfg, log, url, agents, duration, quiet, stop, drain_timeout_sec, security
                )
            return await run_agents(cfg, log, url, duration, quiet, stop, security)


async def run_agents(
    cfg: ConvergeConfig,
    log: EventLog,
    url: str,
    duration: float | None,
    quiet: bool,
    stop: asyncio.Event,
    security: EventSecurity | None = None,
) -> dict[str, Any]:
    """Run the workers and the submitter on ``log``; stop them all before returning.

    With ``security`` each agent signs as itself and the projections verify.
    """
    from converge._cli.demo import DemoSubmitter, DemoWorker
    from converge.coordination.pool_manager import PoolManager
    from converge.coordination.task_manager import TaskManager
    from converge.runtime.loop import AgentRuntime

    started = time.monotonic()
    verifier = security.verifier if security is not None else lambda: None
    tm = TaskManager(log, verifier=verifier())
    pm = PoolManager(log, verifier=verifier())
    await tm.start()
    await pm.start()
    runtimes: list[AgentRuntime] = []
    transports: list[Any] = []
    discovery_service: Any = None
    try:
        if pm.get_pool(cfg.pool_id) is None:
            with contextlib.suppress(ConvergeError):  # created concurrently by another process
                await pm.create_pool({"id": cfg.pool_id})
            await pm.sync()
        discovery_service = discovery(cfg, log)
        store = checkpoint_store(cfg)
        count = cfg.agents if isinstance(cfg.agents, int) else 0
        workers = [DemoWorker(pool_id=cfg.pool_id) for _ in range(count)]
        submitter = DemoSubmitter(cfg.tasks, pool_id=cfg.pool_id, seed=int(time.time()))
        if security is not None:
            for agent in [*workers, submitter]:
                security.enroll(agent.identity)
        for worker in workers:
            await pm.join_pool(worker.id, cfg.pool_id)
        transports = await make_transports(cfg, url, [*workers, submitter])
        for agent, transport in zip([*workers, submitter], transports, strict=True):
            runtimes.append(
                AgentRuntime(
                    agent,
                    transport,
                    task_manager=tm,
                    pool_manager=pm,
                    discovery_service=discovery_service,
                    checkpoint_store=store,
                    decision_log=log,
                    tick_interval_sec=cfg.tick_interval_sec,
                )
            )
        for runtime in runtimes:
            await runtime.start()
        if not quiet:
            typer.echo(
                f"running {cfg.agents} worker(s) and a submitter of {cfg.tasks} task(s) "
                f"in namespace {cfg.namespace!r}",
                err=True,
            )
        total = len(submitter.task_ids)
        open_ids = set(submitter.task_ids)
        tasks = tm.projection

        all_done = asyncio.Event()  # the loop below looks at once, not at its next 0.2 s

        def settle(recorded: RecordedEvent) -> None:
            # Each applied task event looks at its one task: no scan of every task per look.
            task_id = getattr(recorded.event, "task_id", None)
            if task_id in open_ids and (task := tasks.get(task_id)) and task.state.is_terminal:
                open_ids.discard(task_id)
                if not open_ids:
                    all_done.set()

        def reconcile() -> None:
            # Listeners miss events a runner reads to fill a gap: a look now and then
            # (and before the first) checks every open task itself.
            for task_id in list(open_ids):
                if (task := tm.get_task(task_id)) is not None and task.state.is_terminal:
                    open_ids.discard(task_id)

        tm.add_listener(settle)
        looks = 0
        refused: StorageFullError | None = None
        submitting: AgentRuntime | None = runtimes[
            -1
        ]  # the submitter's: done once all its tasks are stored
        with ProgressReporter("tasks done", total, quiet=quiet) as progress:
            while not stop.is_set():
                if submitting is not None and all(
                    tm.get_task(task_id) is not None for task_id in submitter.task_ids
                ):
                    # Its one decide() is done: stopping it spares a look at every
                    # pending task each time a task event wakes it.
                    await submitting.stop()
                    submitting = None
                if looks % 10 == 0 or len(open_ids) < 64:
                    reconcile()
                looks += 1
                done = total - len(open_ids)
                progress.update(done)
                if total and done == total:
                    break
                full = getattr(log, "storage_full", None)
                if isinstance(full, StorageFullError):
                    # Every append fails alike until space is freed: end the run in one
                    # line rather than retry (served agents, which have no end, go on).
                    refused = full
                    break
                if duration is not None and time.monotonic() - started >= duration:
                    break
                await _first_set((stop, all_done), timeout_sec=0.2)
        tm.remove_listener(settle)
        # Stop (drain) the agents before the summary: a task they were running when a
        # signal came is reported or released by then, and counted as what it became.
        for runtime in reversed(runtimes):
            await runtime.stop()
        if refused is not None:
            raise StorageFullError(
                f"{refused}; the demo stopped with {total - len(open_ids)}/{total} tasks "
                "done, and what was stored is kept"
            )
        states = Counter(
            task.state.value
            for task_id in submitter.task_ids
            if (task := tm.get_task(task_id)) is not None
        )
        sample = next(
            (
                task.result
                for task_id in submitter.task_ids
                if (task := tm.get_task(task_id)) is not None and task.result is not None
            ),
            None,
        )
        return {
            "namespace": cfg.namespace,
            "tasks": total,
            "states": dict(states),
            "per_worker": {w.id[:12]: w.completed for w in workers},
            "sample_result": sample,
            "seconds": round(time.monotonic() - started, 3),
            "rejected_events": tm.runner.rejected_events + pm.runner.rejected_events,
        }
    finally:
        for runtime in reversed(runtimes):
            await runtime.stop()
        for transport in transports:  # those no runtime started (idempotent for the rest)
            await transport.stop()
        if discovery_service is not None:  # the networks start it and leave it running
            await discovery_service.stop()
        await pm.stop()
        await tm.stop()


async def _first_set(events: tuple[asyncio.Event, ...], timeout_sec: float) -> None:
    """Return once one of ``events`` is set, or after ``timeout_sec``."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout_sec, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


def discovery(cfg: ConvergeConfig, log: EventLog) -> Any:
    """Return a discovery service on ``log`` (or in memory), or None when unavailable."""
    try:
        from converge.network.discovery import DiscoveryService
    except ImportError:
        logger.warning("discovery is not available; agents are not registered")
        return None
    return DiscoveryService(log if cfg.discovery_store == "events" else None)


def checkpoint_store(cfg: ConvergeConfig) -> Any:
    """Return the configured checkpoint store: a file store or an in-memory one."""
    if cfg.store_backend == "file":
        from converge.extensions.storage.file import FileStore

        return FileStore(cfg.store_path or cfg.data_dir / "store")
    from converge.extensions.storage.memory import MemoryStore

    return MemoryStore()


async def make_transports(cfg: ConvergeConfig, url: str, agents: list[Any]) -> list[Any]:
    """Return one transport per agent, as ``cfg.transport`` says.

    ``tcp`` and ``websocket`` transports listen on loopback ephemeral ports: they are
    started here (the runtime's ``start()`` is then a no-op) and every one knows every
    other one's address. On an error the ones started already are stopped.
    """
    if cfg.transport == "nats":
        from converge.network.transport.nats import NatsTransport

        broker = cfg.broker_config(url)
        return [NatsTransport(a.id, broker, namespace=cfg.namespace) for a in agents]
    if cfg.transport == "local":
        from converge.network.transport.local import LocalTransport, LocalTransportRegistry

        registry = LocalTransportRegistry()
        return [LocalTransport(a.id, registry) for a in agents]
    transports: list[Any]
    if cfg.transport == "tcp":
        from converge.network.transport.tcp import TcpTransport

        transports = [TcpTransport(LOOPBACK, 0, agent_id=a.id) for a in agents]
    else:
        try:
            from converge.network.transport.websocket import WebSocketTransport
        except ImportError as exc:
            raise ConfigError(f"transport websocket: {exc}") from None
        transports = [WebSocketTransport(a.id, host=LOOPBACK, port=0) for a in agents]
    await start_mesh(transports)
    return transports
