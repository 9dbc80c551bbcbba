"""converge.config: file, env and overrides, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from converge.config import ConvergeConfig, load_config
from converge.errors import ConfigError


def test_defaults() -> None:
    cfg = load_config(env={})
    assert isinstance(cfg, ConvergeConfig)
    assert cfg.transport == "local" and cfg.agents == 2 and cfg.nats_url is None
    assert cfg.nats_dir == Path(".converge") / "nats"


def test_file_env_override_precedence(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("agents: 3\npool_id: p1\nnamespace: ns1\nstore-backend: file\n")
    env = {"CONVERGE_AGENTS": "5", "CONVERGE_NATS_URL": "nats://h:4222"}
    cfg = load_config(yaml_file, env=env, namespace="ns2")
    assert (cfg.agents, cfg.pool_id, cfg.namespace, cfg.store_backend) == (5, "p1", "ns2", "file")
    assert cfg.broker_config().servers == ["nats://h:4222"]
    toml_file = tmp_path / "c.toml"
    toml_file.write_text('[converge]\nagents = 4\ntransport = "nats"\n')
    cfg = load_config(env={"CONVERGE_CONFIG": str(toml_file)})
    assert (cfg.agents, cfg.transport) == (4, "nats")


def test_credentials_reach_the_broker_config() -> None:
    env = {
        "CONVERGE_NATS_URL": "nats://a:1,nats://b:2",
        "CONVERGE_NATS_USER": "u",
        "CONVERGE_NATS_PASSWORD": "p",
    }
    broker = load_config(env=env).broker_config()
    assert broker.servers == ["nats://a:1", "nats://b:2"] and broker.user == "u"
    with pytest.raises(ConfigError, match="no broker URL"):
        load_config(env={}).broker_config()


@pytest.mark.parametrize(
    ("content", "suffix", "match"),
    [
        ("agents: [", ".yaml", "not valid YAML"),
        ("agents = ", ".toml", "not valid TOML"),
        ("- 1\n- 2\n", ".yaml", "mapping"),
        ("agents: 0\n", ".yaml", r"agents \(from file .*\): .*greater than or equal to 1"),
        ("bogus: 1\n", ".yml", "bogus"),
        ("x", ".ini", "unknown format"),
    ],
)
def test_bad_files(tmp_path: Path, content: str, suffix: str, match: str) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path, env={})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"CONVERGE_AGENTS": "many"}, r"agents \(from CONVERGE_AGENTS\)"),
        ({"CONVERGE_TRANSPORT": "pigeon"}, "transport"),
        ({"CONVERGE_NATS_URL": "localhost:4222"}, "scheme"),
        ({"CONVERGE_NAMESPACE": "a.b"}, "namespace"),
        ({"CONVERGE_PORT": "70000"}, "port"),
    ],
)
def test_bad_env(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(env=env)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env={})


@pytest.mark.parametrize(
    "value",
    ['["k1", "k2"]', "k1,k2", "k1, k2", " k1 k2 ", "k1,\nk2,"],
)
def test_trusted_signers_from_the_environment_as_json_or_comma_separated(value: str) -> None:
    cfg = load_config(env={"CONVERGE_TRUSTED_SIGNERS": value})
    assert cfg.trusted_signers == ["k1", "k2"]


def test_trusted_signers_in_a_file_as_a_list_or_a_string(tmp_path: Path) -> None:
    listed = tmp_path / "listed.toml"
    listed.write_text('trusted_signers = ["k1", "k2"]\n')
    joined = tmp_path / "joined.toml"
    joined.write_text('trusted_signers = "k1,k2"\n')
    assert load_config(listed, env={}).trusted_signers == ["k1", "k2"]
    assert load_config(joined, env={}).trusted_signers == ["k1", "k2"]


@pytest.mark.parametrize(
    ("value", "match"),
    [("[k1", "CONVERGE_TRUSTED_SIGNERS.*not a JSON list"), ("[1]", "valid string")],
)
def test_bad_trusted_signers_name_the_variable(value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(env={"CONVERGE_TRUSTED_SIGNERS": value})
