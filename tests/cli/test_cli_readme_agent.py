"""The README's "Run your own agents" agent, served by ``converge run file.py:Class``."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from converge.cli import app
from converge.config import load_config

README = Path(__file__).resolve().parents[2] / "README.md"
runner = CliRunner()


def _block(after: str, lang: str) -> str:
    text = README.read_text()
    start = text.index(after)
    match = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"README.md has no {lang} block after {after}"
    return match.group(1)


def test_readme_agents_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "converge.yaml"
    path.write_text(_block("## Run your own agents", "yaml"))
    cfg = load_config(path, env={})
    assert isinstance(cfg.agents, list) and cfg.agents[0].class_ == "summariser.py:Summariser"
    assert cfg.agents[0].options == {"max_words": 20}


@pytest.mark.nats
@pytest.mark.slow
def test_readme_agent_runs(nats_url: str, namespace: str, tmp_path: Path) -> None:
    source = _block("<!-- own-agent -->", "python")
    (tmp_path / "summariser.py").write_text(source)
    # one data directory, so one service key signs the submission the run verifies
    data = str(tmp_path / ".converge")
    common = ["--url", nats_url, "--namespace", namespace, "--data-dir", data]
    with (tmp_path / "run.err").open("wb") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "converge", "run", "summariser.py:Summariser", *common],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    try:
        result = runner.invoke(
            app,
            [
                *("tasks", "submit", "summarise", "--capability", "summarise"),
                *("--input", '{"text": "Hi. Bye."}', *common),
            ],
        )
        assert result.exit_code == 0, result.output
        task_id = result.stdout.strip()
        result = runner.invoke(app, ["tasks", "wait", task_id, "--timeout", "90", *common])
        assert result.exit_code == 0, (result.output, (tmp_path / "run.err").read_text())
        assert orjson.loads(result.stdout) == {"summary": "Hi", "words": 2}
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, (tmp_path / "run.err").read_text()
        summary = orjson.loads(out.splitlines()[-1])
        assert summary["completed"] == 1 and summary["still_assigned"] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
