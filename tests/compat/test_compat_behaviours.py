"""Behaviours a user of the seed design relies on (one test each)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from converge.coordination import PoolManager
from converge.coordination.negotiation import NegotiationProtocol, NegotiationState
from converge.core.decisions import InvokeTool
from converge.core.tools import ToolRegistry
from converge.extensions.storage.file import FileStore
from converge.policy.admission import WhitelistAdmission
from converge.policy.governance import GovernanceModel
from converge.runtime.executor import StandardExecutor


class _Blocking:
    """A synchronous tool that blocks its thread until released."""

    name = "blocking"

    def __init__(self) -> None:
        self.release = threading.Event()

    def run(self, params: dict[str, Any]) -> Any:
        self.release.wait(30)
        return "late"


class _Stubborn:
    """An async tool that ignores its cancellation until released."""

    name = "stubborn"

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def run(self, params: dict[str, Any]) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            async with asyncio.timeout(30):
                await self.release.wait()
        return "late"


class _Echo:
    name = "echo"

    def run(self, params: dict[str, Any]) -> Any:
        return params["text"]


@pytest.mark.asyncio
async def test_a_tool_past_its_timeout_is_cut_off_and_the_next_decisions_run() -> None:
    blocking, stubborn = _Blocking(), _Stubborn()
    tools = ToolRegistry([blocking, stubborn, _Echo()])
    executor = StandardExecutor("me", None, None, None, tool_registry=tools, tool_timeout_sec=0.05)
    try:
        outcomes = await executor.execute(
            [
                InvokeTool("blocking", {}),
                InvokeTool("stubborn", {}),
                InvokeTool("echo", {"text": "on time"}),
            ]
        )
        # the slow tools are still running, yet the decision after them has run
        assert not blocking.release.is_set() and tools.abandoned == 2
        assert [o.outcome for o in outcomes] == ["error", "error", "ok"]
        assert all("ConvergeTimeoutError" in (o.error or "") for o in outcomes[:2])
        assert outcomes[2].result == "on time"
        assert executor.failed == 2
    finally:
        blocking.release.set()
        stubborn.release.set()
        assert await tools.drain(10)


@pytest.mark.asyncio
async def test_a_rejected_negotiation_is_closed_and_an_agreed_one_keeps_its_proposal() -> None:
    async with NegotiationProtocol() as neg:
        rejected = await neg.create_session("a", ["b"], "offer")
        assert await neg.reject(rejected, "b")
        assert not await neg.propose(rejected, "a", "better offer")
        session = neg.get_session(rejected)
        assert session is not None and session.state is NegotiationState.REJECTED
        assert len(session.history) == 1
        agreed = await neg.create_session("a", ["b"], "offer")
        assert await neg.propose(agreed, "b", "counter")
        assert await neg.accept(agreed, "a")
        session = neg.get_session(agreed)
        assert session is not None and session.state is NegotiationState.ACCEPTED
        assert session.current_proposal is not None
        assert session.current_proposal.content == "counter"
        assert not await neg.propose(agreed, "a", "after the deal")


@pytest.mark.asyncio
async def test_a_pool_rebuilt_elsewhere_holds_policy_objects(tmp_path: Path) -> None:
    creator = PoolManager(FileStore(tmp_path))
    await creator.create_pool(
        {"id": "vip", "admission_policy": WhitelistAdmission(whitelist=["alice"])}
    )
    await creator.stop()
    rebuilt = PoolManager(FileStore(tmp_path)).get_pool("vip")  # as in a new process
    assert rebuilt is not None
    assert isinstance(rebuilt.admission_policy, WhitelistAdmission)
    assert rebuilt.admission_policy.allowed == {"alice"}
    assert isinstance(rebuilt.governance_model, GovernanceModel | type(None))
