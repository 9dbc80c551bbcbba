"""Two `converge run` services on one namespace: the second must hold a key the namespace's
signature policy trusts, or fail at once in one line (it used to wait forever at 0/N).

The first run records the policy, trusting its own service key (``<data_dir>/keys``).
A second run with another data directory has another service key: its pool creation and
sweeps would be refused by every verifying process, so it exits 2 naming the two ways
out; sharing the key file (``CONVERGE_SIGNING_KEY``), or the first writer trusting its
id (``CONVERGE_TRUSTED_SIGNERS``), makes it run to the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from converge.security import load_or_create_key

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(300)]

RUN_TIMEOUT_SEC = 150


def _run(url: str, namespace: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *[sys.executable, "-m", "converge", "run", "--url", url, "--namespace", namespace],
            *["--agents", "1", "--tasks", "3", "--duration", "120", "-q"],
            *["--data-dir", str(data_dir)],
        ],
        env=dict(os.environ, CONVERGE_CONFIG="", **env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SEC,
    )


def _completed(run: subprocess.CompletedProcess[str]) -> dict[str, int]:
    assert run.returncode == 0, run.stderr[-3000:]
    states: dict[str, int] = orjson.loads(run.stdout.strip().splitlines()[-1])["states"]
    return states


def test_a_service_whose_key_the_policy_does_not_trust_fails_in_one_line(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    first = _run(nats_url, namespace, tmp_path / "first")
    assert _completed(first) == {"completed": 3}
    trusted = load_or_create_key(tmp_path / "first" / "keys" / "service.key").fingerprint

    other = _run(nats_url, namespace, tmp_path / "other")
    untrusted = load_or_create_key(tmp_path / "other" / "keys" / "service.key").fingerprint
    assert other.returncode == 2, other.stderr[-3000:]
    assert other.stdout == ""
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1, other.stderr
    assert lines[0].startswith("error: the signature policy of namespace"), lines[0]
    for needle in (namespace, untrusted, trusted[:12], "signing_key", "trusted_signers"):
        assert needle in lines[0], (needle, lines[0])


def test_sharing_the_key_file_or_trusting_the_id_lets_a_second_service_run(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    first_key = tmp_path / "first" / "keys" / "service.key"
    assert _completed(_run(nats_url, namespace, tmp_path / "first")) == {"completed": 3}

    shared = _run(nats_url, namespace, tmp_path / "shared", CONVERGE_SIGNING_KEY=str(first_key))
    assert _completed(shared) == {"completed": 3}
    assert not (tmp_path / "shared" / "keys").exists()  # no key of its own was made

    # a new namespace whose first writer trusts the other service's id as well
    other_id = load_or_create_key(tmp_path / "other" / "keys" / "service.key").fingerprint
    trusting = orjson.dumps([other_id]).decode()
    fresh = f"{namespace}t"
    first = _run(nats_url, fresh, tmp_path / "first", CONVERGE_TRUSTED_SIGNERS=trusting)
    assert _completed(first) == {"completed": 3}
    assert _completed(_run(nats_url, fresh, tmp_path / "other")) == {"completed": 3}


def test_submitting_with_an_untrusted_key_is_accepted_without_a_warning(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    assert _completed(_run(nats_url, namespace, tmp_path / "first")) == {"completed": 3}

    def converge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *[sys.executable, "-m", "converge", *args],
                *["--url", nats_url, "--namespace", namespace],
                *["--data-dir", str(tmp_path / "host")],
            ],
            env=dict(os.environ, CONVERGE_CONFIG=""),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SEC,
        )

    # The host's own key signs a submission acting for itself: every verifier accepts it.
    submitted = converge("tasks", "submit", "host-job", "--input", '{"n": 1}')
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert "does not trust" not in submitted.stderr, submitted.stderr
    task_id = submitted.stdout.strip()
    shown = converge("tasks", "show", task_id, "--json")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert orjson.loads(shown.stdout)["state"] == "pending"
    # A cancel is a service act: the untrusted key is still worth the warning.
    cancelled = converge("tasks", "cancel", task_id)
    assert "does not trust" in cancelled.stderr, cancelled.stderr
