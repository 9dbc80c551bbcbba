"""Broker connection settings and the one place that opens a NATS connection.

Every converge component that talks to NATS (the JetStream event log, the NATS
transport, the CLI) builds its connection here, so credentials, TLS, reconnect
limits and ping intervals are configured once and the nats-py defaults (ping every
120 s, 60 reconnects, then closed for good) never apply silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel, ConfigDict, Field, field_validator

from converge.errors import ConfigError, EventLogError

__all__ = [
    "SCHEMES",
    "BrokerConfig",
    "NatsClient",
    "PlainTextRefusedError",
    "TlsConfig",
    "check_url",
    "connect_nats",
    "probe",
    "redact",
]

logger = logging.getLogger(__name__)

#: The URL schemes a broker URL may use: plain, TLS, WebSocket and WebSocket over TLS.
SCHEMES = ("nats", "tls", "ws", "wss")

ErrorCallback = Callable[[Exception], Awaitable[None]]
Callback = Callable[[], Awaitable[None]]


def redact(url: str) -> str:
    """Return ``url`` with any password or token in it replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, hostpart = rest.partition("@")
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    return f"{scheme}://{user + ':' if user else ''}***@{hostpart}"


def check_url(url: str) -> str:
    """Return ``url`` stripped, or raise ``ValueError`` (one line) naming what is wrong.

    The scheme must be one of :data:`SCHEMES`, the host present and the port, when
    given, within 1-65535. Credentials in the URL are never echoed.
    """
    url = url.strip()
    shown = redact(url)
    if "://" not in url:
        raise ValueError(f"{shown!r} needs a scheme, for example nats://host:4222")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raw = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1].rpartition(":")[2]
        detail = (
            f"port {raw} is out of range 1-65535"
            if raw.isdigit()
            else f"port {raw!r} is not a number"
            if raw
            else "malformed host or port"
        )
        raise ValueError(f"{shown!r}: {detail}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"{shown!r}: scheme {scheme!r} is not supported; use nats://, tls://, ws:// or wss://"
        )
    if not parts.hostname:
        raise ValueError(f"{shown!r} has no host")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{shown!r}: port {port} is out of range 1-65535")
    return url


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
    connect_timeout_sec: float = Field(default=5.0, ge=0.01)
    ping_interval_sec: float = Field(default=20.0, ge=0.1)
    max_outstanding_pings: int = Field(default=3, ge=1)
    allow_reconnect: bool = True
    max_reconnect_attempts: int = Field(default=-1, ge=-1)  # -1: forever
    # Between attempts on one server. Short, so a restarted broker is found again well
    # within a second (nats-py sleeps the whole wait after each failed attempt).
    reconnect_time_wait_sec: float = Field(default=0.25, ge=0)
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
        return [check_url(url) for url in value]

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


class PlainTextRefusedError(nats.errors.Error):
    """A server offered no TLS where TLS was required; nothing was sent to it."""


class _TlsGuardClient(NatsClient):
    """A nats-py client that never sends CONNECT in plain text when TLS is required
    (and never leaks the socket of a failed reconnect attempt, below).

    nats-py upgrades to TLS only when the server's INFO says ``tls_required``, even for a
    ``tls://`` URL, so a plain server (or an impostor) would receive the credentials in
    clear. This check runs on every (re)connect, after INFO and before CONNECT.
    ``_process_info`` is nats-py 2.16's hook at that point (the pinned range).
    """

    require_tls = False
    _refusal: PlainTextRefusedError | None = None

    async def _connect_to_server(self, s: Any) -> None:
        # nats-py 2.16 reuses its transport object for each reconnect attempt without
        # closing the socket of an attempt whose handshake failed (a port that accepts
        # while the server behind it is down: docker's proxy, a restarting server); the
        # leaked socket is a ResourceWarning later. Close it before the next attempt.
        transport = self._transport
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()  # type: ignore[no-untyped-call]
        await super()._connect_to_server(s)

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        server = self._current_server
        if (
            initial_connection
            and server is not None
            and server.uri.scheme in ("nats", "tls")
            and (self.require_tls or server.uri.scheme == "tls")
            and not info.get("tls_required", False)
            and not self.options.get("tls_handshake_first", False)
        ):
            where = f"{server.uri.hostname}:{server.uri.port}"
            self._refusal = PlainTextRefusedError(
                f"the server at {where} does not offer TLS; refusing to connect in plain text "
                "(a tls:// URL or TLS settings require it)"
            )
            raise self._refusal
        await super()._process_info(info, initial_connection)

    async def _select_next_server(self) -> None:
        # nats-py retries a refused first connect like a lost one, until the caller's
        # timeout: stop at once (connect_nats turns this into its one-line error).
        if self._refusal is not None:
            raise _RefusedFirstConnect(self._refusal)
        await super()._select_next_server()


class _RefusedFirstConnect(Exception):
    """Raised out of nats-py's connect loop, which catches its own errors and retries."""

    def __init__(self, refusal: PlainTextRefusedError) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


async def probe(url: str, timeout_sec: float = 5.0) -> None:
    """Check that ``url`` is a NATS server: it accepts TCP and greets with INFO in time.

    Raises :class:`EventLogError` with a named reason: refused, unreachable, silent (it
    accepted but sent nothing within ``timeout_sec``), not NATS, or plain text behind a
    ``tls://`` URL. WebSocket URLs are only checked for a TCP accept.
    """
    url = check_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (80 if scheme == "ws" else 443 if scheme == "wss" else 4222)
    shown = f"{scheme}://{host}:{port}"
    try:
        async with asyncio.timeout(timeout_sec):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        raise EventLogError(
            f"cannot reach NATS at {shown}: no answer to the TCP connect within {timeout_sec:g}s"
        ) from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise EventLogError(f"cannot reach NATS at {shown}: {reason}") from None
    try:
        if scheme in ("ws", "wss"):
            return
        try:
            async with asyncio.timeout(timeout_sec):
                line = await reader.readline()
        except TimeoutError:
            raise EventLogError(
                f"the peer at {shown} accepted the connection but sent no NATS greeting "
                f"within {timeout_sec:g}s; is it a NATS server (or one that expects TLS first)?"
            ) from None
        except OSError as exc:
            raise EventLogError(f"the peer at {shown} failed during the greeting: {exc}") from None
        if not line.startswith(b"INFO "):
            said = line[:40].decode("ascii", "replace").strip() or "nothing (closed)"
            raise EventLogError(f"the peer at {shown} is not a NATS server: it said {said!r}")
        if scheme == "tls":
            try:
                info = json.loads(line[5:])
            except ValueError:
                info = {}
            if not info.get("tls_required", False):
                raise EventLogError(
                    f"the server at {shown} does not offer TLS; a tls:// URL never connects in "
                    "plain text (use nats:// for a plain server, or enable TLS on it)"
                )
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


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
    shown = ", ".join(redact(url) for url in config.servers)

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
            logger.debug("nats disconnected from %s (closing)", shown)
            return
        logger.warning("nats disconnected from %s", shown)

    async def _log_reconnect() -> None:
        logger.warning("nats reconnected to %s", shown)

    async def _log_closed() -> None:
        logger.info("nats connection to %s closed", shown)

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
    nc = _TlsGuardClient()
    nc.require_tls = config.tls is not None
    client.append(nc)
    try:
        async with asyncio.timeout(first_connect_sec):
            await nc.connect(**options)
        return nc
    except (OSError, TimeoutError, nats.errors.Error, _RefusedFirstConnect) as exc:
        # A failed TLS handshake can leave close() waiting on the transport: bound it.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(config.connect_timeout_sec):
                await nc.close()
        if isinstance(exc, _RefusedFirstConnect):
            raise EventLogError(f"cannot connect to NATS at {shown}: {exc}") from exc.refusal
        raise EventLogError(
            f"cannot connect to NATS at {shown}: {_reason([*first_errors, exc])}; "
            "check the URL and credentials, or omit the URL to start an embedded server"
        ) from exc


def _reason(errors: list[BaseException]) -> str:
    """The most telling of a failed connect's errors, in one line.

    A server refusing credentials sends ``-ERR 'Authorization Violation'`` and closes;
    the client may see only the reset of that close, so a reset is named as what it
    most likely is.
    """
    for exc in errors:
        if "authorization" in str(exc).lower():
            return str(exc)
    exc = errors[-2] if len(errors) > 1 and isinstance(errors[-1], TimeoutError) else errors[-1]
    if isinstance(exc, ConnectionResetError):
        return f"{exc}: the server closed the connection (wrong or missing credentials?)"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
