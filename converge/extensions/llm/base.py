"""The LLM provider interface and the HTTP plumbing the bundled providers share.

Providers talk to their APIs with httpx (extra ``llm``), imported on first use.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import orjson
import tenacity

from converge.errors import (
    ClosedError,
    ConfigError,
    ConvergeTimeoutError,
    DecodeError,
    InvalidStateError,
    TransportError,
)
from converge.lifecycle import AsyncService

if TYPE_CHECKING:
    import httpx

__all__ = ["ChatMessage", "HttpLLMProvider", "LLMProvider", "ProviderHTTPError"]

logger = logging.getLogger(__name__)

ChatMessage = Mapping[str, Any]
"""One chat turn: ``{"role": "system" | "user" | "assistant", "content": str}``."""


@runtime_checkable
class LLMProvider(Protocol):
    """Turns a prompt into a completion."""

    async def complete(self, prompt: str, *, system: str | None = None, **options: Any) -> str:
        """Return the model's reply to ``prompt`` (with ``system`` instructions).

        ``options`` are provider request fields (``model``, ``temperature``,
        ``max_tokens``...). Raises ``TransportError`` when the API fails,
        ``ConvergeTimeoutError`` when it does not answer in time, ``DecodeError``
        for a reply of an unexpected shape.
        """
        ...


class ProviderHTTPError(TransportError):
    """The provider answered with an HTTP error status (``status_code``)."""

    def __init__(self, message: str, *, status_code: int, retry_after_sec: float | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.retry_after_sec = retry_after_sec

    @property
    def is_retryable(self) -> bool:
        """Whether trying again later may succeed (429 and 5xx)."""
        return self.status_code == 429 or self.status_code >= 500


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise ConfigError(
            "LLM providers need httpx; install the extra: pip install 'converge[llm]'"
        ) from exc
    return httpx


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


class HttpLLMProvider(AsyncService):
    """Shared behaviour of the HTTP providers: keys, client lifecycle, retries, errors.

    ``api_key`` defaults to the environment variable ``env_var``; a missing key is
    a ``ConfigError`` on the first request. ``timeout_sec`` bounds each request.
    Answers 429 and 5xx are retried ``max_retries`` times (with tenacity) with
    exponential backoff from ``backoff_sec`` (or the server's ``Retry-After``, capped
    at ``max_backoff_sec``). ``chat(messages)`` is the blocking form of ``achat``.
    ``transport`` (an ``httpx.AsyncBaseTransport``, for example
    ``httpx.MockTransport``) or ``client`` (an ``httpx.AsyncClient`` you own) replace
    the network. Used with ``async with`` (or ``start()``/``stop()``)
    the provider keeps one connection pool; otherwise each call opens and closes
    its own client.
    """

    env_var: ClassVar[str] = ""
    default_base_url: ClassVar[str] = ""
    default_model: ClassVar[str] = ""
    name: ClassVar[str] = "llm"

    def __init__(
        self,
        api_key: str | None = None,
        model: str | None = None,
        *,
        base_url: str | None = None,
        timeout_sec: float = 60.0,
        max_tokens: int = 1024,
        max_retries: int = 2,
        backoff_sec: float = 0.5,
        max_backoff_sec: float = 20.0,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if timeout_sec <= 0:
            raise ConfigError(f"{type(self).__name__}.timeout_sec must be > 0, got {timeout_sec!r}")
        if max_tokens < 1:
            raise ConfigError(f"{type(self).__name__}.max_tokens must be >= 1, got {max_tokens!r}")
        if max_retries < 0 or backoff_sec < 0 or max_backoff_sec < 0:
            raise ConfigError(f"{type(self).__name__}: retries and backoff must be >= 0")
        if transport is not None and client is not None:
            raise ConfigError(f"{type(self).__name__}: give transport= or client=, not both")
        self._api_key = api_key
        self.model = model or self.default_model
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.timeout_sec = timeout_sec
        self.max_tokens = max_tokens
        self.max_retries = max_retries
        self.backoff_sec = backoff_sec
        self.max_backoff_sec = max_backoff_sec
        self._transport = transport
        self._external_client = client
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open a connection pool reused by every request until :meth:`stop`."""
        if self._closed:
            raise ClosedError(f"{type(self).__name__} was stopped; make a new one")
        if self._client is None and self._external_client is None:
            self._client = self._new_client()

    async def stop(self) -> None:
        """Close the connection pool it opened (idempotent); a given client stays open."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    aclose = stop

    def _new_client(self) -> httpx.AsyncClient:
        mod = _httpx()
        client: httpx.AsyncClient = mod.AsyncClient(
            timeout=mod.Timeout(self.timeout_sec), transport=self._transport
        )
        return client

    # -- requests ----------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The API key (argument, else the environment); ``ConfigError`` when missing."""
        key = self._api_key or os.environ.get(self.env_var)
        if not key:
            raise ConfigError(
                f"{type(self).__name__} needs an API key: pass api_key= or set {self.env_var}"
            )
        return key

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _endpoint(self) -> str:
        raise NotImplementedError

    def _body(self, messages: Sequence[ChatMessage], options: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, data: Any) -> str:
        raise NotImplementedError

    async def complete(self, prompt: str, *, system: str | None = None, **options: Any) -> str:
        """Return the model's reply to ``prompt`` (see :class:`LLMProvider`)."""
        if not isinstance(prompt, str):
            raise DecodeError(f"prompt must be a str, got {type(prompt).__name__}")
        messages: list[ChatMessage] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        return await self.achat(messages, **options)

    def chat(self, messages: Sequence[ChatMessage], **options: Any) -> str:
        """Return the reply to chat ``messages``, blocking: the seed's synchronous call.

        For scripts and code without an event loop: it runs :meth:`achat` in a loop of
        its own, with a client of its own. Inside a running event loop it raises
        ``InvalidStateError``: ``await achat(...)`` (or ``complete``) there instead.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise InvalidStateError(
                f"{type(self).__name__}.chat() blocks and cannot run inside an event loop; "
                "use `await provider.achat(messages)` there"
            )
        return asyncio.run(self._achat(messages, options, shared_client=False))

    async def achat(self, messages: Sequence[ChatMessage], **options: Any) -> str:
        """Return the model's reply to a list of chat ``messages`` (role and content)."""
        return await self._achat(messages, options, shared_client=True)

    async def _achat(
        self, messages: Sequence[ChatMessage], options: dict[str, Any], *, shared_client: bool
    ) -> str:
        if self._closed:
            raise ClosedError(f"{type(self).__name__} was stopped; make a new one")
        checked = _check_messages(messages)
        headers = self._headers()
        body = orjson.dumps(self._body(checked, dict(options)))
        url = self._endpoint()
        client = (self._external_client or self._client) if shared_client else None
        if client is not None:
            data = await self._send_with_retries(client, url, headers, body)
        else:
            async with self._new_client() as own:
                data = await self._send_with_retries(own, url, headers, body)
        return self._parse(data)

    async def _send_with_retries(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str], body: bytes
    ) -> Any:
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=self._retry_delay,
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, ProviderHTTPError) and exc.is_retryable
            ),
            before_sleep=self._log_retry,
            reraise=True,
        )
        return await retrying(self._send, client, url, headers, body)

    def _retry_delay(self, state: tenacity.RetryCallState) -> float:
        """The server's ``Retry-After``, else exponential backoff; capped."""
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = exc.retry_after_sec if isinstance(exc, ProviderHTTPError) else None
        if delay is None:
            delay = self.backoff_sec * (2 ** (state.attempt_number - 1))
        return min(delay, self.max_backoff_sec)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "%s: HTTP %s, retrying in %.2f s (attempt %d of %d)",
            self.name,
            getattr(exc, "status_code", "?"),
            state.upcoming_sleep,
            state.attempt_number,
            self.max_retries,
        )

    async def _send(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str], body: bytes
    ) -> Any:
        mod = _httpx()
        try:
            response = await client.post(
                url,
                content=body,
                headers={**headers, "content-type": "application/json"},
                timeout=self.timeout_sec,
            )
        except mod.TimeoutException as exc:
            raise ConvergeTimeoutError(
                f"{self.name}: no answer from {url} within {self.timeout_sec} s"
            ) from exc
        except mod.HTTPError as exc:
            raise TransportError(f"{self.name}: request to {url} failed: {exc!r}") from exc
        if response.status_code >= 400:
            raise ProviderHTTPError(
                f"{self.name}: HTTP {response.status_code} from {url}: "
                f"{_error_text(response.content)}",
                status_code=response.status_code,
                retry_after_sec=_retry_after(response.headers.get("retry-after")),
            )
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(
                f"{self.name}: reply from {url} is not JSON: {response.content[:200]!r}"
            ) from exc


def _check_messages(messages: object) -> list[ChatMessage]:
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
        raise DecodeError(f"chat messages must be a list of dicts, got {type(messages).__name__}")
    checked: list[ChatMessage] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise DecodeError(f"chat message {i} must be a dict, got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant"):
            raise DecodeError(f"chat message {i} has role {role!r}; use system, user or assistant")
        if not isinstance(content, str):
            raise DecodeError(
                f"chat message {i} content must be a str, got {type(content).__name__}"
            )
        checked.append({"role": role, "content": content})
    if not checked:
        raise DecodeError("chat messages must not be empty")
    return checked


def _error_text(content: bytes) -> str:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content[:200].decode("utf-8", "replace")
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return content[:200].decode("utf-8", "replace")
