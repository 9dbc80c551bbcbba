"""Settings of the ``converge`` CLI: a file (YAML or TOML), ``CONVERGE_*`` variables, flags.

Precedence, lowest first: defaults, the file, the environment, explicit overrides (CLI
flags). Every key can be set in the environment as ``CONVERGE_<KEY>`` (for example
``CONVERGE_AGENTS=4``, ``CONVERGE_NATS_URL=nats://host:4222``); ``CONVERGE_CONFIG`` names
the file when none is given. Invalid input raises :class:`ConfigError` with a one-line
message naming the key, the source and the fix.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from converge.errors import ConfigError
from events.connection import BrokerConfig

__all__ = ["ENV_PREFIX", "ConvergeConfig", "load_config"]

ENV_PREFIX = "CONVERGE_"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


class ConvergeConfig(BaseModel):
    """What ``converge run`` and the other commands need.

    ``transport`` carries agent-to-agent messages (``local``: in-process, ``nats``: the
    broker, ``tcp`` or ``websocket``: loopback listeners on ephemeral ports).
    ``host``/``port`` are where the embedded NATS server listens when no
    ``nats_url`` is given (port 0: any free port). ``agents`` is the number of worker
    agents, ``tasks`` the number of demo tasks the submitter sends. ``store_backend``
    (``memory``/``file``) keeps runtime checkpoints, in ``store_path`` for ``file``;
    ``discovery_store`` (``memory``/``events``) where agent registrations live.
    ``namespace`` prefixes every stream, created with ``replicas`` copies (3 on a
    three-node cluster); ``data_dir`` holds local state, the embedded
    server's JetStream data in ``nats_data_dir`` (default ``<data_dir>/nats``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: Literal["local", "nats", "tcp", "websocket"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    agents: int = Field(default=2, ge=1, le=256)
    tasks: int = Field(default=10, ge=0, le=1_000_000)
    pool_id: str = "default"
    discovery_store: Literal["memory", "events"] = "events"
    store_backend: Literal["memory", "file"] = "memory"
    store_path: Path | None = None
    nats_url: str | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    nats_token: str | None = None
    nats_creds: str | None = None
    nats_nkey_seed: str | None = None
    namespace: str = "converge"
    replicas: int = Field(default=1, ge=1, le=5)
    data_dir: Path = Path(".converge")
    nats_data_dir: Path | None = None
    tick_interval_sec: float = Field(default=0.05, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"

    @field_validator("namespace", "pool_id")
    @classmethod
    def _token(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError(f"{value!r} must be letters, digits, '-' or '_' only")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("nats_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for url in value.split(","):
            if "://" not in url.strip():
                raise ValueError(f"{url.strip()!r} needs a scheme, for example nats://host:4222")
        return value.strip()

    @property
    def nats_dir(self) -> Path:
        """Where the embedded server keeps its JetStream data."""
        return self.nats_data_dir if self.nats_data_dir is not None else self.data_dir / "nats"

    def broker_config(self, servers: str | list[str] | None = None) -> BrokerConfig:
        """Return the broker connection settings (``servers`` overrides ``nats_url``)."""
        url = servers if servers is not None else self.nats_url
        if url is None:
            raise ConfigError("no broker URL: set nats_url (CONVERGE_NATS_URL) or pass --url")
        values: dict[str, Any] = {"servers": url, "name": "converge-cli"}
        for key, field in (
            ("user", "nats_user"),
            ("password", "nats_password"),
            ("token", "nats_token"),
            ("creds_file", "nats_creds"),
            ("nkey_seed", "nats_nkey_seed"),
        ):
            if getattr(self, field) is not None:
                values[key] = getattr(self, field)
        try:
            return BrokerConfig.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(f"invalid broker settings: {_first_error(exc)}") from None


def _first_error(exc: ValidationError, sources: Mapping[str, str] | None = None) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "config"
    where = f" (from {sources[key]})" if sources and key in sources else ""
    message = str(err["msg"]).removeprefix("Value error, ")
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{key}{where}: {message}{more}"


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text_suffix = path.suffix.lower()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    data: object
    if text_suffix == ".toml":
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    elif text_suffix in (".yaml", ".yml", ".json"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                "reading YAML config needs PyYAML: pip install 'converge[cli]'"
            ) from None
        try:
            data = yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {first}") from None
    else:
        raise ConfigError(
            f"config file {str(path)!r}: unknown format {text_suffix or '(none)'}; "
            "use .yaml, .yml or .toml"
        )
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of keys, not {type(data).__name__}"
        )
    section = data.get("converge")
    if isinstance(section, dict) and len(data) == 1:
        data = section
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> ConvergeConfig:
    """Return the settings from ``path`` (or ``$CONVERGE_CONFIG``), the env and ``overrides``.

    Overrides that are None are ignored. Raises ``ConfigError`` with one line naming the
    bad key and where it came from.
    """
    environ = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    file_path = path if path is not None else environ.get(ENV_PREFIX + "CONFIG") or None
    if file_path is not None:
        from_file = _read_file(Path(file_path))
        values.update(from_file)
        sources.update({k: f"file {file_path}" for k in from_file})
    for name in ConvergeConfig.model_fields:
        env_key = ENV_PREFIX + name.upper()
        raw = environ.get(env_key)
        if raw is not None and raw != "":
            values[name] = raw
            sources[name] = env_key
    for name, value in overrides.items():
        if value is not None:
            values[name] = value
            sources[name] = "--" + name.replace("_", "-")
    try:
        return ConvergeConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {_first_error(exc, sources)}") from None
