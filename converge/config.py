"""Settings of the ``converge`` CLI: a file (YAML or TOML), ``CONVERGE_*`` variables, flags.

Precedence, lowest first: defaults, the file, the environment, explicit overrides (CLI
flags). Every key can be set in the environment as ``CONVERGE_<KEY>`` (for example
``CONVERGE_AGENTS=4``, ``CONVERGE_NATS_URL=nats://host:4222``); ``CONVERGE_CONFIG`` names
the file when none is given. The layers are pydantic-settings sources (the environment is
its ``EnvSettingsSource``, the file a source of ours); ``ConvergeConfig()`` alone reads
them all. Invalid input raises :class:`ConfigError` with a one-line message naming the
key, the source and the fix.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from converge.errors import ConfigError
from events.connection import BrokerConfig, check_url

__all__ = ["ENV_PREFIX", "MAX_NAMESPACE_LEN", "AgentSpec", "ConvergeConfig", "load_config"]

ENV_PREFIX = "CONVERGE_"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")

#: JetStream stream names are at most 255 characters; the longest is ``<NS>_COORDINATION``.
MAX_NAMESPACE_LEN = 255 - len("_COORDINATION")
#: Pool ids are subject tokens; keep them well inside NATS's 4 KiB control line.
MAX_POOL_ID_LEN = 255


class AgentSpec(BaseModel):
    """One entry of ``agents:``: an agent class, how many copies, their pool, options.

    ``class`` is ``package.module:Class`` or ``path/to/file.py:Class``; ``options`` are
    keyword arguments of its constructor.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_: str = Field(alias="class", min_length=1)
    count: int = Field(default=1, ge=1, le=256)
    pool: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


_COUNT: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=1, le=256)])


class ConvergeConfig(BaseSettings):
    """What ``converge run`` and the other commands need.

    ``transport`` carries agent-to-agent messages (``local``: in-process, ``nats``: the
    broker, ``tcp`` or ``websocket``: loopback listeners on ephemeral ports).
    ``host``/``port`` are where the embedded NATS server listens when no
    ``nats_url`` is given (port 0: any free port). ``agents`` is the number of demo worker
    agents or a list of :class:`AgentSpec` (``{class, count, pool, options}``),
    ``tasks`` the number of demo tasks the submitter sends. ``store_backend``
    (``memory``/``file``) keeps runtime checkpoints, in ``store_path`` for ``file``;
    ``discovery_store`` (``memory``/``events``) where agent registrations live.
    ``log_format`` is ``text`` or ``json`` (one JSON object per record).
    ``namespace`` prefixes every stream, created with ``replicas`` copies (3 on a
    three-node cluster); ``data_dir`` holds local state, the embedded
    server's JetStream data in ``nats_data_dir`` (default ``<data_dir>/nats``).
    ``nats_max_file_store`` caps the embedded server's JetStream file store in bytes
    (default: just below the free disk space); ``nats_server_config`` is a nats-server
    configuration file the embedded server includes (users, TLS, permissions).
    ``connect_timeout_sec`` bounds one connection attempt; ``startup_timeout_sec`` how
    long ``converge run`` keeps retrying an unreachable ``nats_url`` at start-up;
    ``shutdown_timeout_sec`` how long a stop (SIGINT/SIGTERM) may take before the
    process exits anyway. Signed events (docs/security.md): ``verify`` (off:
    ``--no-verify``) checks who signed every event; ``require_signatures`` is the rule
    the first writer records for a new namespace; ``trusted_signers`` are key ids
    trusted to act for no agent (and for any); ``signing_key`` is the service key file
    (default ``<data_dir>/keys/service.key``).
    """

    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, env_prefix=ENV_PREFIX, env_ignore_empty=True
    )

    transport: Literal["local", "nats", "tcp", "websocket"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    agents: int | list[AgentSpec] = 2
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
    nats_tls_ca_file: str | None = None
    nats_tls_cert_file: str | None = None
    nats_tls_key_file: str | None = None
    namespace: str = "converge"
    replicas: int = Field(default=1, ge=1, le=5)
    data_dir: Path = Path(".converge")
    nats_data_dir: Path | None = None
    nats_max_file_store: int | None = Field(default=None, ge=1024 * 1024)
    nats_server_config: Path | None = None
    tick_interval_sec: float = Field(default=0.05, ge=0.01, le=3600)
    connect_timeout_sec: float = Field(default=5.0, ge=0.01, le=600)
    startup_timeout_sec: float = Field(default=30.0, ge=0, le=86400)
    shutdown_timeout_sec: float = Field(default=15.0, ge=0.1, le=3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    log_format: Literal["text", "json"] = "text"
    verify: bool = True
    require_signatures: bool = True
    # NoDecode: the environment's value reaches _signer_ids as it is, so a comma-separated
    # list works as well as a JSON one.
    trusted_signers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    signing_key: Path | None = None

    @field_validator("namespace", "pool_id")
    @classmethod
    def _token(cls, value: str, info: ValidationInfo) -> str:
        if not _TOKEN.match(value):
            raise ValueError(f"{value!r} must be letters, digits, '-' or '_' only")
        limit = MAX_NAMESPACE_LEN if info.field_name == "namespace" else MAX_POOL_ID_LEN
        if len(value) > limit:
            raise ValueError(
                f"is {len(value)} characters long; at most {limit} fit JetStream's names"
            )
        return value

    @field_validator("trusted_signers", mode="before")
    @classmethod
    def _signer_ids(cls, value: object) -> object:
        """Take ``id1,id2`` (or spaces) as well as a JSON list ``["id1", "id2"]``."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"is not a JSON list of key ids ({exc})") from None
        return [part for part in re.split(r"[\s,]+", text) if part]

    @field_validator("agents", mode="before")
    @classmethod
    def _agents(cls, value: object) -> object:
        """A demo worker count (1..256) or a list of agent entries, with one clear error."""
        if isinstance(value, list | tuple):
            specs = []
            for i, item in enumerate(value):
                try:
                    specs.append(AgentSpec.model_validate(item))
                except ValidationError as exc:
                    raise ValueError(f"entry {i}: {_first_error(exc)}") from None
            return specs
        try:
            count = _COUNT.validate_python(value)
        except ValidationError as exc:
            raise ValueError(_first_error(exc).removeprefix("config: ")) from None
        return count

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("nats_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return ",".join(check_url(url) for url in value.split(",") if url.strip())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init arguments) over ``CONVERGE_*`` variables over the file."""
        call = _CALL.get()
        if call is None:
            environ: Mapping[str, str] = os.environ
            env_source = env_settings
        else:
            environ = call
            env_source = _mapping_env_source(settings_cls, environ)
        path = environ.get(ENV_PREFIX + "CONFIG") or None
        if call is not None:
            path = _PATH.get() or path
        return (init_settings, env_source, _FileSource(settings_cls, path))

    @property
    def signing_key_path(self) -> Path:
        """The service key file: ``signing_key`` or ``<data_dir>/keys/service.key``."""
        return (
            self.signing_key if self.signing_key is not None else self.data_dir / "keys/service.key"
        )

    @property
    def nats_dir(self) -> Path:
        """Where the embedded server keeps its JetStream data."""
        return self.nats_data_dir if self.nats_data_dir is not None else self.data_dir / "nats"

    def broker_config(self, servers: str | list[str] | None = None) -> BrokerConfig:
        """Return the broker connection settings (``servers`` overrides ``nats_url``)."""
        url = servers if servers is not None else self.nats_url
        if url is None:
            raise ConfigError("no broker URL: set nats_url (CONVERGE_NATS_URL) or pass --url")
        values: dict[str, Any] = {
            "servers": url,
            "name": "converge-cli",
            "connect_timeout_sec": self.connect_timeout_sec,
        }
        for key, field in (
            ("user", "nats_user"),
            ("password", "nats_password"),
            ("token", "nats_token"),
            ("creds_file", "nats_creds"),
            ("nkey_seed", "nats_nkey_seed"),
        ):
            if getattr(self, field) is not None:
                values[key] = getattr(self, field)
        tls = {
            key: getattr(self, f"nats_tls_{key}")
            for key in ("ca_file", "cert_file", "key_file")
            if getattr(self, f"nats_tls_{key}") is not None
        }
        if tls:
            values["tls"] = tls
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

    ``env`` replaces ``os.environ`` when given. Overrides that are None are ignored.
    Raises ``ConfigError`` with one line naming the bad key and where it came from.
    """
    environ = os.environ if env is None else env
    flags = {name: value for name, value in overrides.items() if value is not None}
    env_token = _CALL.set(environ)
    path_token = _PATH.set(str(path) if path is not None else None)
    try:
        return ConvergeConfig(**flags)
    except ValidationError as exc:
        file_path = path if path is not None else environ.get(ENV_PREFIX + "CONFIG") or None
        raise ConfigError(
            f"invalid config: {_first_error(exc, _origins(environ, file_path, flags))}"
        ) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid config: {_first_line(exc)}") from None
    finally:
        _PATH.reset(path_token)
        _CALL.reset(env_token)


# Per-call inputs of load_config, read by ConvergeConfig.settings_customise_sources.
_CALL: ContextVar[Mapping[str, str] | None] = ContextVar("converge_config_env", default=None)
_PATH: ContextVar[str | None] = ContextVar("converge_config_path", default=None)


def _mapping_env_source(
    settings_cls: type[BaseSettings], environ: Mapping[str, str]
) -> EnvSettingsSource:
    """pydantic-settings' environment source reading ``environ`` instead of ``os.environ``."""
    source = EnvSettingsSource(settings_cls)
    source.env_vars = {k.lower(): v for k, v in environ.items() if v != ""}
    return source


_FLAGS = {"nats_url": "--url"}


def _origins(
    environ: Mapping[str, str], file_path: object, flags: Mapping[str, Any]
) -> dict[str, str]:
    """Name the layer each key came from, highest precedence first."""
    origins: dict[str, str] = {}
    for name in ConvergeConfig.model_fields:
        if name in flags:
            origins[name] = _FLAGS.get(name, "--" + name.replace("_", "-"))
        elif environ.get(ENV_PREFIX + name.upper()):
            origins[name] = ENV_PREFIX + name.upper()
        elif file_path is not None:
            origins[name] = f"file {file_path}"
    if file_path is not None:
        origins.setdefault("config", f"file {file_path}")
    return origins


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _FileSource(PydanticBaseSettingsSource):
    """The YAML/TOML file layer (its keys may use ``-``; a lone ``converge:`` section)."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self._data = _read_file(Path(path)) if path is not None else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)
