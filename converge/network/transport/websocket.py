"""WebSocket transport: one binary WebSocket message per converge message.

Needs the ``websockets`` package (``pip install 'converge[websocket]'``). A transport
may serve (``host``/``port``; ``port=0`` picks a free port, see :attr:`url`) and
dials peers (``peers`` maps agent ids to ``ws://`` URLs, see :meth:`add_peer`) and
an optional default ``uri`` that takes messages without another route. A client
announces its agent id in the ``X-Converge-Agent`` header, so a server can answer
a client it cannot dial over the client's own connection.

Guarantees: messages from one sender to one receiver keep their order while the
connection lives; delivery is at most once (a broken connection may lose the
message being sent); a send that cannot finish within ``send_timeout_sec`` (a peer
that stops reading) raises ``TransportError`` and closes the connection. A
received text frame or undecodable bytes is counted in ``decode_errors`` and
skipped; a message above ``max_message_bytes`` makes the library close that
connection (counted in ``oversized_frames``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from converge.core.message import MAX_MESSAGE_BYTES, Message
from converge.core.topic import Topic
from converge.errors import ConfigError, TransportError
from converge.network.transport.base import Transport, TransportState

try:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.asyncio.server import Server, ServerConnection, serve
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "WebSocketTransport needs the websockets package: pip install 'converge[websocket]'"
    ) from exc

__all__ = ["AGENT_HEADER", "WebSocketTransport"]

logger = logging.getLogger(__name__)

AGENT_HEADER = "X-Converge-Agent"
"""Request header in which a dialing transport names its agent id."""

_CLOSE_MESSAGE_TOO_BIG = 1009

Connection = ClientConnection | ServerConnection


class WebSocketTransport(Transport):
    """Exchange messages over WebSocket connections as ``agent_id``.

    Serve on ``host``:``port`` when ``port`` is given (0: ephemeral), dial ``uri``
    and ``peers`` on demand. A direct message goes to the recipient's peer URL, else
    over the recipient's own inbound connection, else to ``uri``; without any of
    them ``send`` raises ``TransportError``. Topic and broadcast messages go to every
    known peer and connected client (receivers filter by their subscriptions).
    Durations are seconds.
    """

    def __init__(
        self,
        agent_id: str,
        uri: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        peers: Mapping[str, str] | None = None,
        topics: Iterable[Topic | str] = (),
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        open_timeout_sec: float = 5.0,
        send_timeout_sec: float = 5.0,
        close_timeout_sec: float = 2.0,
        ping_interval_sec: float | None = 20.0,
        max_queue: int = 10_000,
        replay_max_skew_sec: float = 300.0,
        replay_window_size: int = 100_000,
    ) -> None:
        if not isinstance(agent_id, str) or not agent_id:
            raise ConfigError(f"WebSocketTransport needs a non-empty agent_id, got {agent_id!r}")
        super().__init__(
            agent_id,
            topics=topics,
            max_queue=max_queue,
            max_message_bytes=max_message_bytes,
            replay_max_skew_sec=replay_max_skew_sec,
            replay_window_size=replay_window_size,
        )
        if uri is None and port is None and not peers:
            raise ConfigError(
                "WebSocketTransport needs a uri to dial, a port to serve on, or peers"
            )
        if port is not None and not 0 <= port < 65536:
            raise ConfigError(f"port must be 0..65535 (0: ephemeral), got {port!r}")
        self.uri = _check_url(uri, "uri") if uri is not None else None
        self.host = host
        self.port = port
        self.open_timeout_sec = open_timeout_sec
        self.send_timeout_sec = send_timeout_sec
        self.close_timeout_sec = close_timeout_sec
        self.ping_interval_sec = ping_interval_sec
        self.peers: dict[str, str] = {}
        for peer_id, url in (peers or {}).items():
            self.add_peer(peer_id, url)
        self._server: Server | None = None
        self._outbound: dict[str, ClientConnection] = {}  # url -> connection
        self._dialing: dict[str, asyncio.Lock] = {}
        self._inbound: dict[str, ServerConnection] = {}  # agent id -> latest connection
        self._readers: set[asyncio.Task[None]] = set()
        self._send_locks: dict[int, asyncio.Lock] = {}

    @property
    def local_id(self) -> str:
        assert self.agent_id is not None
        return self.agent_id

    @property
    def url(self) -> str:
        """The ``ws://host:port`` URL this transport serves on (once started)."""
        if self.port is None:
            raise ConfigError(f"{self!r} does not serve; pass port= to make it listen")
        return f"ws://{self.host}:{self.port}"

    def add_peer(self, agent_id: str, url: str) -> None:
        """Send messages for ``agent_id`` to the server at ``url`` (``ws://`` or ``wss://``)."""
        if not isinstance(agent_id, str) or not agent_id:
            raise ConfigError(f"peer agent id must be a non-empty str, got {agent_id!r}")
        self.peers[agent_id] = _check_url(url, f"URL of peer {agent_id!r}")

    def remove_peer(self, agent_id: str) -> None:
        """Forget ``agent_id``'s URL; no-op when unknown."""
        self.peers.pop(agent_id, None)

    # -- lifecycle -------------------------------------------------------------

    async def _start(self) -> None:
        if self.port is not None:
            try:
                self._server = await serve(
                    self._handle_inbound,
                    self.host,
                    self.port,
                    max_size=self.max_message_bytes,
                    compression=None,
                    ping_interval=self.ping_interval_sec,
                    close_timeout=self.close_timeout_sec,
                    logger=logger,
                )
            except OSError as exc:
                raise TransportError(
                    f"cannot serve WebSocket on {self.host}:{self.port}: {exc}"
                ) from exc
            sockets = list(self._server.sockets)
            if sockets:
                self.port = int(sockets[0].getsockname()[1])
        if self.uri is not None:
            await self._dial(self.uri)

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        outbound = list(self._outbound.values())
        self._outbound.clear()
        for conn in outbound:
            await self._close(conn)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.close_timeout_sec + 1.0):
                    await server.wait_closed()
        readers = list(self._readers)
        for task in readers:
            task.cancel()
        if readers:
            await asyncio.wait(readers, timeout=self.close_timeout_sec + 1.0)
        self._readers.clear()
        self._inbound.clear()
        self._send_locks.clear()

    async def _close(self, conn: Connection) -> None:
        with contextlib.suppress(TimeoutError, OSError, ConnectionClosed):
            async with asyncio.timeout(self.close_timeout_sec + 1.0):
                await conn.close()
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.abort()

    # -- receiving -------------------------------------------------------------

    async def _handle_inbound(self, conn: ServerConnection) -> None:
        request = conn.request
        peer_id = request.headers.get(AGENT_HEADER) if request is not None else None
        if peer_id:
            self._inbound[peer_id] = conn
        try:
            await self._read(conn)
        finally:
            if peer_id and self._inbound.get(peer_id) is conn:
                del self._inbound[peer_id]

    async def _read(self, conn: Connection) -> None:
        try:
            async for data in conn:
                if isinstance(data, str):
                    self.stats.decode_errors += 1
                    logger.warning("%r skipped a text frame; messages are binary", self)
                    continue
                self._deliver_bytes(data)
        except ConnectionClosed as exc:
            codes = {frame.code for frame in (exc.sent, exc.rcvd) if frame is not None}
            if _CLOSE_MESSAGE_TOO_BIG in codes:
                self.stats.oversized_frames += 1
                logger.warning(
                    "%r: connection %s closed: message above %d bytes",
                    self,
                    conn.remote_address,
                    self.max_message_bytes,
                )
        finally:
            self._send_locks.pop(id(conn), None)

    # -- sending ---------------------------------------------------------------

    async def _dial(self, url: str) -> ClientConnection:
        conn = self._outbound.get(url)
        if conn is not None and conn.close_code is None:
            return conn
        async with self._dialing.setdefault(url, asyncio.Lock()):
            conn = self._outbound.get(url)
            if conn is not None and conn.close_code is None:
                return conn
            try:
                conn = await connect(
                    url,
                    additional_headers={AGENT_HEADER: self.local_id},
                    open_timeout=self.open_timeout_sec,
                    max_size=self.max_message_bytes,
                    compression=None,
                    proxy=None,
                    ping_interval=self.ping_interval_sec,
                    close_timeout=self.close_timeout_sec,
                    logger=logger,
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                self.stats.send_errors += 1
                raise TransportError(
                    f"cannot open WebSocket to {url}: {exc or type(exc).__name__}; "
                    "is the peer serving?"
                ) from exc
            if self.state not in (TransportState.RUNNING, TransportState.STARTING):
                await self._close(conn)
                raise TransportError(f"{self!r} stopped while connecting to {url}")
            self._outbound[url] = conn
            task = asyncio.create_task(self._read(conn), name=f"ws-read-{url}")
            self._readers.add(task)
            task.add_done_callback(self._readers.discard)
            return conn

    async def _route(self, agent_id: str) -> Connection | None:
        url = self.peers.get(agent_id)
        if url is not None:
            return await self._dial(url)
        conn = self._inbound.get(agent_id)
        if conn is not None and conn.close_code is None:
            return conn
        if self.uri is not None:
            return await self._dial(self.uri)
        return None

    async def _send(self, message: Message, data: bytes) -> None:
        if message.recipient is not None:
            for attempt in (1, 2):
                conn = await self._route(message.recipient)
                if conn is None:
                    self.stats.send_errors += 1
                    raise TransportError(
                        f"no route to agent {message.recipient!r} (message {message.id}); "
                        "call add_peer(agent_id, url) or pass uri="
                    )
                try:
                    await self._send_on(conn, data)
                    return
                except _Closed:
                    if attempt == 2 or not isinstance(conn, ClientConnection):
                        raise
                    logger.warning("%r reconnecting for %s", self, message.recipient)
        targets: list[Connection] = []
        for agent_id in [*self.peers, *self._inbound]:
            if agent_id == self.agent_id:
                continue
            try:
                conn = await self._route(agent_id)
            except TransportError as exc:
                logger.warning("%r could not reach %s: %s", self, agent_id, exc)
                continue
            if conn is not None and conn not in targets:
                targets.append(conn)
        if self.uri is not None:
            with contextlib.suppress(TransportError):
                upstream = await self._dial(self.uri)
                if upstream not in targets:
                    targets.append(upstream)
        results = await asyncio.gather(
            *(self._send_on(c, data) for c in targets), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            if isinstance(result, Exception):
                logger.warning("%r could not deliver message %s: %s", self, message.id, result)

    async def _send_on(self, conn: Connection, data: bytes) -> None:
        lock = self._send_locks.setdefault(id(conn), asyncio.Lock())
        try:
            async with lock, asyncio.timeout(self.send_timeout_sec):
                await conn.send(data)
        except TimeoutError as exc:
            self.stats.send_errors += 1
            if conn.transport is not None:
                conn.transport.abort()
            raise TransportError(
                f"peer {conn.remote_address} did not read for {self.send_timeout_sec} s; "
                "connection closed"
            ) from exc
        except ConnectionClosed as exc:
            self.stats.send_errors += 1
            raise _Closed(f"connection to {conn.remote_address} closed: {exc}") from exc


class _Closed(TransportError):
    """The connection closed under a send (the caller may redial once)."""


def _check_url(url: Any, what: str) -> str:
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise ConfigError(f"{what} must be a ws:// or wss:// URL, got {url!r}")
    return url
