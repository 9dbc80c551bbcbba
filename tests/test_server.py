from __future__ import annotations

import nats
import pytest

from converge.errors import ConfigError
from events.server import EmbeddedNatsServer, find_nats_server


@pytest.mark.asyncio
async def test_embedded_server_serves_jetstream_and_stops(tmp_path) -> None:
    server = EmbeddedNatsServer(data_dir=tmp_path / "data")
    url = await server.start()
    assert url.startswith("nats://127.0.0.1:")
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().account_info()
        assert info.limits is not None
    finally:
        await nc.close()
    await server.stop()
    assert not server.is_running
    await server.stop()  # idempotent
    assert (tmp_path / "data" / "jetstream").is_dir()


def test_missing_binary_names_the_fix(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CONVERGE_NATS_SERVER", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="CONVERGE_NATS_SERVER"):
        find_nats_server()
    monkeypatch.delenv("CONVERGE_NATS_SERVER")
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"converge\[server\]"):
        find_nats_server()


def test_session_fixture_is_running(nats_server: EmbeddedNatsServer) -> None:
    assert nats_server.is_running
