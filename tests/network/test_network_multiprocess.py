"""Two OS processes exchange signed messages; forged, replayed and unknown ones are dropped."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from converge.core.identity import Identity

PEER = Path(__file__).with_name("peer_process.py")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0


async def _spawn(role: str, backend: str, config: dict[str, Any]) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(PEER),
        role,
        backend,
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def _line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        raw = await proc.stdout.readline()
    if not raw:
        assert proc.stderr is not None
        err = await proc.stderr.read()
        raise AssertionError(f"peer exited early: {err.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(raw)
    return result


async def _finish(proc: asyncio.subprocess.Process) -> None:
    try:
        async with asyncio.timeout(TIMEOUT):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]


async def _exchange(backend: str, extra: dict[str, Any]) -> dict[str, Any]:
    sender = Identity.generate()
    receiver = await _spawn(
        "receive",
        backend,
        {
            **extra,
            "sender_id": sender.fingerprint,
            "sender_public_key": sender.public_key.hex(),
        },
    )
    try:
        ready = await _line(receiver)
        config = {**extra, "private_key": sender.private_key_bytes().hex()}
        if ready["port"] is not None:
            config["port"] = ready["port"]
        sending = await _spawn("send", backend, config)
        assert (await _line(sending))["sent"] == 7
        await _finish(sending)
        result = await _line(receiver)
        await _finish(receiver)
        return result
    finally:
        if receiver.returncode is None:
            receiver.kill()
            await receiver.wait()


def _check(result: dict[str, Any]) -> None:
    assert result["payloads"] == [{"n": 1}, {"n": 2}, {"n": 3}, {"last": True}]
    stats = result["stats"]
    assert stats["dropped_unverified"] == 1
    assert stats["dropped_replayed"] == 1
    assert stats["dropped_unknown_sender"] == 1
    assert stats["received"] == 7


@pytest.mark.slow
@pytest.mark.asyncio
async def test_two_processes_over_tcp() -> None:
    _check(await _exchange("tcp", {}))


@pytest.mark.slow
@pytest.mark.nats
@pytest.mark.asyncio
async def test_two_processes_over_nats(nats_url: str, namespace: str) -> None:
    _check(await _exchange("nats", {"nats_url": nats_url, "namespace": namespace}))
