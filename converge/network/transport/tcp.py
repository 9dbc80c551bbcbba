# Over 400 lines: framing, dialing, accepting and back-pressure of one wire protocol.
"""TCP transport: length-prefixed msgpack frames over asyncio streams.

Wire format: each frame is a 4-byte big-endian length followed by that many bytes
of :meth:`Message.to_bytes` output. A transport listens on ``host:port`` and sends
to its peers over pooled outbound connections (one per peer address, reopened when
broken). Connections carry frames one way; a reply goes over the replier's own
connection to the sender's listening address.

Guarantees: frames of one connection arrive in order, so messages from one sender
to one receiver keep their order while the connection lives. Delivery is at most
once: a message written just before a connection breaks may be lost, and a write
that cannot finish within ``write_timeout_sec`` (a peer that stops reading) fails
with ``TransportError`` and closes the connection. Nothing is duplicated.

Bad input never stops the receiver: an undecodable frame is counted in
``decode_errors`` and skipped; a frame header announcing more than
``max_frame_bytes`` is counted in ``oversized_frames`` and its connection closed
(the stream cannot be resynchronised); a frame that does not complete within
``frame_timeout_sec`` closes its connection; each connection has its own task, so
a half-closed or silent peer stalls nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from converge.core.message import MAX_MESSAGE_BYTES, Message
from converge.core.topic import Topic
from converge.errors import ConfigError, FrameTooLargeError, TransportError
from converge.network.transport.base import Transport

__all__ = ["HEADER", "TCP_ROUTE_NAMESPACE", "TcpTransport", "encode_frame"]

logger = logging.getLogger(__name__)

HEADER = struct.Struct("!I")
"""Frame header: payload length, 4 bytes, big-endian."""

TCP_ROUTE_NAMESPACE = "transport.tcp"
"""A topic of this namespace with ``host`` and ``port`` attributes addresses a listener."""

Address = tuple[str, int]

_DRAIN_BELOW = 64 * 1024
"""Below this many buffered outbound bytes ``drain()`` cannot block: skip its timer."""


def _buffered(reader: asyncio.StreamReader) -> int:
    """Return how many bytes ``reader`` holds already (0 when unknown)."""
    buffer = getattr(reader, "_buffer", None)  # CPython's StreamReader keeps a bytearray
    return len(buffer) if isinstance(buffer, bytearray) else 0


def encode_frame(data: bytes, max_frame_bytes: int = MAX_MESSAGE_BYTES) -> bytes:
    """Return ``data`` with its length header.

    Raises ``FrameTooLargeError`` when ``data`` is longer than ``max_frame_bytes``.
    """
    if len(data) > max_frame_bytes:
        raise FrameTooLargeError(
            f"frame of {len(data)} bytes exceeds max_frame_bytes={max_frame_bytes}; "
            "send a smaller message or raise the limit on both ends"
        )
    return HEADER.pack(len(data)) + data


def _address(value: object, what: str) -> Address:
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or isinstance(value[1], bool)
        or not isinstance(value[1], int)
        or not 0 < value[1] < 65536
    ):
        raise ConfigError(f"{what} must be a (host, port) pair with port 1..65535, got {value!r}")
    return (value[0], value[1])


@dataclass
class _Connection:
    """One pooled outbound connection."""

    address: Address
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    watcher: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        return not self.writer.is_closing()


class TcpTransport(Transport):
    """Listen on ``host:port`` (``port=0``: an ephemeral port, see :attr:`port`).

    ``agent_id`` names the local agent (``None``: accept every message).
    ``peers`` maps agent ids to ``(host, port)`` listening addresses (see
    :meth:`add_peer`); ``topic_routes`` maps a topic namespace to the agent ids that
    receive it (default: every peer, each receiver filters by its subscriptions).
    A message whose topics include ``transport.tcp`` with ``host`` and ``port``
    attributes goes to that address. ``ssl_context`` enables TLS on both sides.
    Durations are seconds.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        agent_id: str | None = None,
        *,
        peers: Mapping[str, Address] | None = None,
        topic_routes: Mapping[str, Iterable[str]] | None = None,
        topics: Iterable[Topic | str] = (),
        ssl_context: ssl.SSLContext | None = None,
        client_ssl_context: ssl.SSLContext | None = None,
        max_frame_bytes: int = MAX_MESSAGE_BYTES,
        connect_timeout_sec: float = 5.0,
        write_timeout_sec: float = 5.0,
        frame_timeout_sec: float = 30.0,
        max_queue: int = 10_000,
        replay_max_skew_sec: float = 300.0,
        replay_window_size: int = 100_000,
        identity_fingerprint: str | None = None,
    ) -> None:
        super().__init__(
            agent_id if agent_id is not None else identity_fingerprint,
            topics=topics,
            max_queue=max_queue,
            max_message_bytes=max_frame_bytes,
            replay_max_skew_sec=replay_max_skew_sec,
            replay_window_size=replay_window_size,
        )
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise ConfigError(f"port must be 0..65535 (0: ephemeral), got {port!r}")
        for name, value in (
            ("connect_timeout_sec", connect_timeout_sec),
            ("write_timeout_sec", write_timeout_sec),
            ("frame_timeout_sec", frame_timeout_sec),
        ):
            if value <= 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {value}")
        self.host = host
        self.port = port
        self.max_frame_bytes = max_frame_bytes
        self.ssl_context = ssl_context
        self.client_ssl_context = client_ssl_context
        self.connect_timeout_sec = connect_timeout_sec
        self.write_timeout_sec = write_timeout_sec
        self.frame_timeout_sec = frame_timeout_sec
        self.peers: dict[str, Address] = {}
        for peer_id, address in (peers or {}).items():
            self.add_peer(peer_id, address)
        self.topic_routes: dict[str, list[str]] = {
            name: list(ids) for name, ids in (topic_routes or {}).items()
        }
        self._server: asyncio.Server | None = None
        self._pool: dict[Address, _Connection] = {}
        self._dialing: dict[Address, asyncio.Lock] = {}
        self._inbound: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    # -- configuration ---------------------------------------------------------

    @property
    def address(self) -> Address:
        """The listening ``(host, port)`` (the real port once started)."""
        return (self.host, self.port)

    def add_peer(self, agent_id: str, address: Address) -> None:
        """Send messages for ``agent_id`` to the listener at ``address`` ``(host, port)``."""
        if not isinstance(agent_id, str) or not agent_id:
            raise ConfigError(f"peer agent id must be a non-empty str, got {agent_id!r}")
        self.peers[agent_id] = _address(tuple(address), f"address of peer {agent_id!r}")

    def remove_peer(self, agent_id: str) -> None:
        """Forget ``agent_id``'s address; no-op when unknown."""
        self.peers.pop(agent_id, None)

    def add_route(self, topic_namespace: str, agent_id: str) -> None:
        """Send topic messages of ``topic_namespace`` to ``agent_id`` (a known peer)."""
        ids = self.topic_routes.setdefault(topic_namespace, [])
        if agent_id not in ids:
            ids.append(agent_id)

    # -- lifecycle -------------------------------------------------------------

    async def _start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._handle_inbound,
                self.host,
                self.port,
                ssl=self.ssl_context,
                limit=self.max_frame_bytes + HEADER.size,
            )
        except OSError as exc:
            raise TransportError(
                f"cannot listen on {self.host}:{self.port}: {exc}; pick another port or 0"
            ) from exc
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._pool.values()):
            await self._close_connection(conn)
        self._pool.clear()
        # Abort inbound sockets so their reader tasks end on their own; cancelling them
        # makes Python 3.11's start_server callback log a spurious CancelledError.
        tasks = list(self._inbound)
        for writer in self._inbound.values():
            writer.transport.abort()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        self._inbound.clear()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await server.wait_closed()

    # -- receiving -------------------------------------------------------------

    async def _handle_inbound(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if not self.is_running:
            writer.close()
            return
        self._inbound[task] = writer
        peer = writer.get_extra_info("peername")
        try:
            await self._read_frames(reader, peer)
        finally:
            self._inbound.pop(task, None)
            await _close_writer(writer)

    async def _read_frames(self, reader: asyncio.StreamReader, peer: object) -> None:
        """Read frames until EOF, a broken stream or an oversized frame."""
        while True:
            try:
                header = await reader.readexactly(HEADER.size)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                return  # peer closed (possibly mid-header): nothing more to read
            (length,) = HEADER.unpack(header)
            if length > self.max_frame_bytes:
                self.stats.oversized_frames += 1
                logger.warning(
                    "%r closed connection from %s: frame of %d bytes exceeds max_frame_bytes=%d",
                    self,
                    peer,
                    length,
                    self.max_frame_bytes,
                )
                return
            if length == 0:
                self.stats.decode_errors += 1
                continue
            try:
                if _buffered(reader) >= length:  # whole frame already read: no timer needed
                    data = await reader.readexactly(length)
                else:
                    async with asyncio.timeout(self.frame_timeout_sec):
                        data = await reader.readexactly(length)
            except TimeoutError:
                logger.warning(
                    "%r closed connection from %s: frame incomplete after %s s",
                    self,
                    peer,
                    self.frame_timeout_sec,
                )
                return
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                self.stats.decode_errors += 1  # truncated frame at EOF
                return
            self._deliver_bytes(data)

    @property
    def pool(self) -> Mapping[Address, object]:
        """The pooled outbound connections by peer address (read-only view)."""
        return MappingProxyType(self._pool)

    def _is_subscribed(self, namespace: str) -> bool:
        """A ``transport.tcp`` routing topic addressed this listener: the message is for it."""
        return namespace == TCP_ROUTE_NAMESPACE or super()._is_subscribed(namespace)

    # -- sending ---------------------------------------------------------------

    def _targets(self, message: Message) -> tuple[list[Address], bool]:
        """Return the addresses for ``message`` and whether it is a direct send."""
        for topic in message.topics:
            if topic.namespace == TCP_ROUTE_NAMESPACE:
                attrs = topic.attributes
                addr = _address(
                    (attrs.get("host"), attrs.get("port")), f"{TCP_ROUTE_NAMESPACE} topic"
                )
                return [addr], True
        if message.recipient is not None:
            address = self.peers.get(message.recipient)
            if address is None:
                raise TransportError(
                    f"no address for agent {message.recipient!r} (message {message.id}); "
                    "call add_peer(agent_id, (host, port)) or pass peers={...}"
                )
            return [address], True
        ids: list[str] = []
        if message.topics and self.topic_routes:
            for topic in message.topics:
                for agent_id in self.topic_routes.get(topic.namespace, ()):
                    if agent_id not in ids:
                        ids.append(agent_id)
        else:
            ids = list(self.peers)
        addresses: list[Address] = []
        for agent_id in ids:
            if agent_id == self.agent_id:
                continue
            address = self.peers.get(agent_id)
            if address is not None and address not in addresses:
                addresses.append(address)
        return addresses, False

    async def _send(self, message: Message, data: bytes) -> None:
        frame = encode_frame(data, self.max_frame_bytes)
        addresses, direct = self._targets(message)
        if direct:
            await self._send_frame(addresses[0], frame)
            return
        results = await asyncio.gather(
            *(self._send_frame(a, frame) for a in addresses), return_exceptions=True
        )
        for address, result in zip(addresses, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                logger.warning(
                    "%r could not deliver message %s to %s:%d: %s",
                    self,
                    message.id,
                    address[0],
                    address[1],
                    result,
                )

    async def _send_frame(self, address: Address, frame: bytes) -> None:
        """Write ``frame`` to ``address``, reconnecting once if the pooled connection broke."""
        for attempt in (1, 2):
            conn = await self._connection(address)
            try:
                async with conn.lock:
                    if not conn.is_open:
                        raise ConnectionResetError("connection closed by the peer")
                    conn.writer.write(frame)
                    if conn.writer.transport.get_write_buffer_size() > _DRAIN_BELOW:
                        async with asyncio.timeout(self.write_timeout_sec):
                            await conn.writer.drain()
                    else:
                        await conn.writer.drain()  # not paused: returns at once
                return
            except TimeoutError as exc:
                self.stats.send_errors += 1
                await self._drop_connection(conn)
                raise TransportError(
                    f"peer {address[0]}:{address[1]} did not read for {self.write_timeout_sec} s; "
                    "connection closed"
                ) from exc
            except (ConnectionError, OSError) as exc:
                await self._drop_connection(conn)
                if attempt == 2:
                    self.stats.send_errors += 1
                    raise TransportError(
                        f"cannot send to {address[0]}:{address[1]}: {exc}"
                    ) from exc
                logger.warning("%r reconnecting to %s:%d: %s", self, address[0], address[1], exc)

    async def _connection(self, address: Address) -> _Connection:
        conn = self._pool.get(address)
        if conn is not None and conn.is_open:
            return conn
        lock = self._dialing.setdefault(address, asyncio.Lock())
        async with lock:
            conn = self._pool.get(address)
            if conn is not None and conn.is_open:
                return conn
            if conn is not None:
                await self._drop_connection(conn)
            try:
                async with asyncio.timeout(self.connect_timeout_sec):
                    reader, writer = await asyncio.open_connection(
                        address[0],
                        address[1],
                        ssl=self.client_ssl_context or self.ssl_context,
                        limit=self.max_frame_bytes + HEADER.size,
                    )
            except (OSError, TimeoutError) as exc:
                self.stats.send_errors += 1
                raise TransportError(
                    f"cannot connect to {address[0]}:{address[1]}: "
                    f"{exc or type(exc).__name__}; is the peer listening?"
                ) from exc
            if not self.is_running:  # stopped while dialing
                writer.close()
                raise TransportError(f"{self!r} stopped while connecting to {address}")
            conn = _Connection(address, reader, writer)
            conn.watcher = asyncio.create_task(
                self._watch(conn), name=f"tcp-watch-{address[0]}:{address[1]}"
            )
            self._pool[address] = conn
            return conn

    async def _watch(self, conn: _Connection) -> None:
        """Read an outbound connection (frames are accepted too) to notice when it closes."""
        try:
            await self._read_frames(conn.reader, conn.address)
        finally:
            conn.writer.close()
            if self._pool.get(conn.address) is conn:
                del self._pool[conn.address]

    async def _drop_connection(self, conn: _Connection) -> None:
        if self._pool.get(conn.address) is conn:
            del self._pool[conn.address]
        await self._close_connection(conn)

    async def _close_connection(self, conn: _Connection) -> None:
        watcher = conn.watcher
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
            await asyncio.wait([watcher], timeout=2.0)
        await _close_writer(conn.writer)


async def _close_writer(writer: asyncio.StreamWriter, timeout_sec: float = 1.0) -> None:
    """Close ``writer``, flushing for at most ``timeout_sec``, then abort the socket."""
    writer.close()
    try:
        async with asyncio.timeout(timeout_sec):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()
