"""Broker connection settings and the one place that opens a NATS connection.

Every converge component that talks to NATS (the JetStream event log, the NATS
transport, the CLI) builds its connection here, so credentials, TLS, reconnect
limits and ping intervals are configured once and the nats-py defaults (ping every
120 s, 60 reconnects, then closed for good) never apply silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel, ConfigDict, Field, field_validator

from converge.errors import ConfigError, EventLogError

__all__ = ["BrokerConfig", "NatsClient", "TlsConfig", "connect_nats"]

logger = logging.getLogger(__name__)

ErrorCallback = Callable[[Exception], Awaitable[None]]
Callback = Callable[[], Awaitable[None]]


class TlsConfig(BaseModel):
    """TLS for the broker connection; files are PEM."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    hostname: str | None = None
    verify: bool = True

    def context(self) -> ssl.SSLContext:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"tls.{name}: {path!r} is not a file")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("tls.cert_file and tls.key_file go together; set both or neither")
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


class BrokerConfig(BaseModel):
    """Where the NATS broker is and how to reach it.

    ``servers`` is one URL or a list (a cluster). Authentication: ``user`` and
    ``password``, or ``token``, or ``nkey_seed`` (a path to a seed file), or
    ``creds_file`` (a JWT creds file). Durations are seconds.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    servers: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    name: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed: str | None = None
    creds_file: str | None = None
    tls: TlsConfig | None = None
    connect_timeout_sec: float = Field(default=5.0, gt=0)
    ping_interval_sec: float = Field(default=20.0, gt=0)
    max_outstanding_pings: int = Field(default=3, ge=1)
    allow_reconnect: bool = True
    max_reconnect_attempts: int = Field(default=-1, ge=-1)  # -1: forever
    reconnect_time_wait_sec: float = Field(default=1.0, ge=0)
    pending_size_bytes: int = Field(default=64 * 1024 * 1024, gt=0)

    @field_validator("servers", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("at least one server URL is needed")
        return value

    @field_validator("servers")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        for url in value:
            if "://" not in url:
                raise ValueError(f"server URL {url!r} needs a scheme such as nats://")
        return value

    @classmethod
    def from_env(cls, prefix: str = "CONVERGE_NATS_", **overrides: Any) -> BrokerConfig:
        """Read ``<prefix>URL``, ``USER``, ``PASSWORD``, ``TOKEN``, ``NKEY_SEED``, ``CREDS``."""
        env = os.environ
        values: dict[str, Any] = {}
        mapping = {
            "URL": "servers",
            "USER": "user",
            "PASSWORD": "password",
            "TOKEN": "token",
            "NKEY_SEED": "nkey_seed",
            "CREDS": "creds_file",
        }
        for key, field in mapping.items():
            if env.get(prefix + key):
                values[field] = env[prefix + key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)


async def connect_nats(
    config: BrokerConfig | str | list[str],
    *,
    error_cb: ErrorCallback | None = None,
    disconnected_cb: Callback | None = None,
    reconnected_cb: Callback | None = None,
    closed_cb: Callback | None = None,
) -> NatsClient:
    """Open a nats-py connection with the given settings.

    Raises :class:`EventLogError` naming the servers when the first connect fails
    and :class:`ConfigError` for unusable settings.
    """
    if not isinstance(config, BrokerConfig):
        config = BrokerConfig(servers=config)  # type: ignore[arg-type]

    client: list[NatsClient] = []
    first_errors: list[Exception] = []

    async def _log_error(exc: Exception) -> None:
        if client and not client[0].is_connected and not client[0].is_reconnecting:
            first_errors.append(exc)  # still on the first connect: reported once, below
            logger.debug("nats connect attempt failed: %s", exc)
            return
        logger.warning("nats connection error: %s", exc)

    async def _log_disconnect() -> None:
        # nats-py also reports the disconnect of a deliberate close(); only warn otherwise.
        if client and (client[0].is_closed or client[0].is_draining):
            logger.debug("nats disconnected from %s (closing)", config.servers)
            return
        logger.warning("nats disconnected from %s", config.servers)

    async def _log_reconnect() -> None:
        logger.warning("nats reconnected to %s", config.servers)

    async def _log_closed() -> None:
        logger.info("nats connection to %s closed", config.servers)

    options: dict[str, Any] = {
        "servers": config.servers,
        "connect_timeout": config.connect_timeout_sec,
        "ping_interval": config.ping_interval_sec,
        "max_outstanding_pings": config.max_outstanding_pings,
        "allow_reconnect": config.allow_reconnect,
        "max_reconnect_attempts": config.max_reconnect_attempts,
        "reconnect_time_wait": config.reconnect_time_wait_sec,
        "pending_size": config.pending_size_bytes,
        "error_cb": error_cb or _log_error,
        "disconnected_cb": disconnected_cb or _log_disconnect,
        "reconnected_cb": reconnected_cb or _log_reconnect,
        "closed_cb": closed_cb or _log_closed,
    }
    if config.name:
        options["name"] = config.name
    if config.user is not None:
        options["user"] = config.user
        options["password"] = config.password or ""
    if config.token is not None:
        options["token"] = config.token
    if config.nkey_seed is not None:
        if not Path(config.nkey_seed).is_file():
            raise ConfigError(f"nkey_seed: {config.nkey_seed!r} is not a file")
        options["nkeys_seed"] = config.nkey_seed
    if config.creds_file is not None:
        if not Path(config.creds_file).is_file():
            raise ConfigError(f"creds_file: {config.creds_file!r} is not a file")
        options["user_credentials"] = config.creds_file
    if config.tls is not None:
        options["tls"] = config.tls.context()
        if config.tls.hostname:
            options["tls_hostname"] = config.tls.hostname
    # With reconnects allowed nats-py retries the *first* connect forever too; bound it so an
    # unreachable broker fails fast with a clear error instead of hanging the caller.
    first_connect_sec = config.connect_timeout_sec + config.reconnect_time_wait_sec
    nc = NatsClient()
    client.append(nc)
    try:
        async with asyncio.timeout(first_connect_sec):
            await nc.connect(**options)
        return nc
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        raise EventLogError(
            f"cannot connect to NATS at {', '.join(config.servers)}: "
            f"{first_errors[-1] if first_errors else exc or type(exc).__name__}; "
            "check the URL and credentials, or omit the URL to start an embedded server"
        ) from exc
