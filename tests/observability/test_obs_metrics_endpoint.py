"""``converge run --metrics-port`` serves Prometheus metrics that move during a run."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from converge.observability.otel import instruments, serve_metrics

pytestmark = [pytest.mark.asyncio, pytest.mark.nats, pytest.mark.slow]

_COMPLETED = re.compile(r"^converge_tasks_completed_total(?:\{[^}]*\})? ([0-9.e+]+)$", re.M)


def _completed(text: str) -> float:
    found = _COMPLETED.findall(text)
    return sum(float(v) for v in found)


async def test_run_serves_moving_counters(nats_url: str, namespace: str, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "converge", "run", "--url", nats_url, "--namespace", namespace,
        "--agents", "2", "--tasks", "3000", "--metrics-port", "0", "--quiet",
        "--data-dir", str(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stderr.readline()).decode()
                assert line, "converge run exited before serving metrics"
                if line.startswith("metrics at "):
                    url = line.split("metrics at ", 1)[1].strip()
                    break
        assert url.startswith("http://127.0.0.1:")
        seen: list[float] = []
        async with httpx.AsyncClient(timeout=10) as client:
            async with asyncio.timeout(90):
                while len(set(seen)) < 2 or max(seen) == 0:
                    response = await client.get(url)
                    assert response.status_code == 200
                    seen.append(_completed(response.text))
                    if proc.returncode is not None:
                        break
                    await asyncio.sleep(0.2)  # a scrape interval, as Prometheus would
        body = response.text
        assert "converge_tasks_submitted_total" in body
        assert "converge_append_duration_seconds_bucket" in body
        assert max(seen) > min(seen), seen  # the counters moved during the run
        async with asyncio.timeout(120):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_metrics_endpoint_in_process_and_bad_paths() -> None:
    async with serve_metrics("127.0.0.1", 0) as server:
        instruments.conflict("tasks")
        async with httpx.AsyncClient(timeout=10) as client:
            ok = await client.get(server.url)
            missing = await client.get(server.url.replace("/metrics", "/nope"))
    assert ok.status_code == 200
    assert "converge_claim_conflicts_total" in ok.text
    assert missing.status_code == 404


async def test_bad_metrics_port_is_a_config_error() -> None:
    from converge.errors import ConfigError

    with pytest.raises(ConfigError, match="metrics port"):
        async with serve_metrics("127.0.0.1", 70000):
            pass
