"""Strict input checks at the edge: each bad input exits with its code and one line."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterator

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from converge.cli import app
from converge.config import MAX_NAMESPACE_LEN, load_config
from converge.errors import ConfigError, EventLogError
from events.connection import BrokerConfig, check_url, probe

runner = CliRunner()
ENV = {"CONVERGE_CONFIG": ""}


def _one_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["run", "--url", "nats://127.0.0.1:99999"], {}, "port 99999 is out of range 1-65535"),
        (["replay", "--url", "nats://127.0.0.1:0"], {}, "port 0 is out of range"),
        (["streams", "ls", "--url", "nats://h:4x"], {}, "port '4x' is not a number"),
        (["run", "--url", "http://127.0.0.1:4222"], {}, "scheme 'http' is not supported"),
        (["streams", "ls", "--url", "redis://h:6379"], {}, "use nats://, tls://, ws:// or wss://"),
        (["run", "--url", "nats://:4222"], {}, "has no host"),
        (["run", "--url", "nats://u:secret@h:99999"], {}, "u:***@h"),
        (["run"], {"CONVERGE_TICK_INTERVAL_SEC": "1e-9"}, "tick_interval_sec"),
        (["run"], {"CONVERGE_NATS_URL": "nats://h:70000"}, "CONVERGE_NATS_URL"),
        (
            ["run", "--url", "nats://127.0.0.1:1", "--namespace", "n" * (MAX_NAMESPACE_LEN + 1)],
            {},
            f"at most {MAX_NAMESPACE_LEN}",
        ),
        (["run", "--url", "nats://127.0.0.1:1", "--pool-id", "p" * 300], {}, "pool_id"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], env: dict[str, str], needle: str) -> None:
    result = runner.invoke(app, args, env={**ENV, **env})
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert needle in line
    assert "secret" not in result.output


def test_timings_have_lower_bounds() -> None:
    with pytest.raises(ConfigError, match="tick_interval_sec .*0.01"):
        load_config(env={}, tick_interval_sec=0.001)
    assert load_config(env={}, tick_interval_sec=0.01).tick_interval_sec == 0.01
    with pytest.raises(ValidationError, match="connect_timeout_sec"):
        BrokerConfig(connect_timeout_sec=0.0001)
    with pytest.raises(ValidationError, match="reconnect_time_wait_sec"):
        BrokerConfig(reconnect_time_wait_sec=-1)
    with pytest.raises(ValidationError, match="ping_interval_sec"):
        BrokerConfig(ping_interval_sec=0.001)


def test_check_url_accepts_the_four_schemes() -> None:
    for url in ("nats://h:4222", "tls://h", "ws://h:8080/x", "wss://[::1]:443"):
        assert check_url(f" {url} ") == url
    with pytest.raises(ValueError, match="scheme 'http'"):
        BrokerConfig(servers="nats://a:1,http://b:2")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose peer accepts TCP (the kernel's backlog) and never speaks."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_a_peer_that_never_speaks_is_named(silent_port: int) -> None:
    result = runner.invoke(
        app, ["streams", "ls", "--url", f"nats://127.0.0.1:{silent_port}"], env=ENV
    )
    assert result.exit_code == 1, result.output
    line = _one_error_line(result.output)
    assert f"127.0.0.1:{silent_port}" in line and "sent no NATS greeting" in line


@pytest.mark.asyncio
async def test_probe_names_a_refused_port_and_a_peer_that_is_not_nats() -> None:
    with pytest.raises(EventLogError, match="cannot reach NATS at nats://127.0.0.1:1"):
        await probe("nats://127.0.0.1:1", 2.0)
    chatter = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import socket,sys\n"
        "s=socket.socket();s.bind(('127.0.0.1',0));s.listen(1)\n"
        "print(s.getsockname()[1],flush=True)\n"
        "c,_=s.accept();c.sendall(b'HTTP/1.1 400 Bad Request\\r\\n\\r\\n');sys.stdin.read()\n",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert chatter.stdout is not None
        port = int(await asyncio.wait_for(chatter.stdout.readline(), 30))
        with pytest.raises(EventLogError, match="is not a NATS server: it said 'HTTP/1.1 400"):
            await probe(f"nats://127.0.0.1:{port}", 10.0)
    finally:
        assert chatter.stdin is not None
        chatter.stdin.close()
        await asyncio.wait_for(chatter.wait(), 30)


FAKE_PLAIN_SERVER = """
import socket, sys
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.sendall(b'INFO {"server_id":"x","auth_required":true,"max_payload":1048576}\\r\\n')
c.settimeout(30)
got = b''
try:
    while True:
        chunk = c.recv(4096)
        if not chunk:
            break
        got += chunk
except OSError:
    pass
print(repr(got), flush=True)
"""


@pytest.mark.parametrize("how", ["tls-url", "tls-settings"])
@pytest.mark.asyncio
async def test_tls_never_sends_credentials_in_plain_text(how: str, tmp_path) -> None:
    from events.connection import TlsConfig, connect_nats

    fake = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FAKE_PLAIN_SERVER, stdout=asyncio.subprocess.PIPE
    )
    assert fake.stdout is not None
    port = int(await asyncio.wait_for(fake.stdout.readline(), 30))
    scheme, tls = ("tls", None) if how == "tls-url" else ("nats", TlsConfig(verify=False))
    config = BrokerConfig(
        servers=[f"{scheme}://127.0.0.1:{port}"],
        user="alice",
        password="s3cret-pw",
        tls=tls,
        allow_reconnect=False,
        connect_timeout_sec=5,
    )
    with pytest.raises(EventLogError, match="does not offer TLS; refusing to connect in plain"):
        await connect_nats(config)
    received = (await asyncio.wait_for(fake.stdout.readline(), 30)).decode()
    await asyncio.wait_for(fake.wait(), 30)
    assert "CONNECT" not in received and "s3cret-pw" not in received
