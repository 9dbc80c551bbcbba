"""examples/seed_recovery.py, the seed's recovery story, runs and tells it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow]


def test_the_seed_recovery_example(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "seed_recovery.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "before: step 0  completed" in lines and "before: step 1  assigned" in lines
    assert "after:  step 0  completed" in lines and "after:  step 2  pending" in lines
    assert any("admission WhitelistAdmission" in line for line in lines)
    assert "done:   step 3  completed {'done_by': 'restart'}" in lines
