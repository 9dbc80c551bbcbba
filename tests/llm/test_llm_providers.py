"""HTTP providers against httpx.MockTransport: requests, replies, errors, retries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from converge.errors import (
    ClosedError,
    ConfigError,
    ConvergeTimeoutError,
    DecodeError,
    TransportError,
)
from converge.extensions.llm import (
    AnthropicProvider,
    LLMProvider,
    MistralProvider,
    OpenAIProvider,
    ProviderHTTPError,
)
from converge.extensions.llm.base import HttpLLMProvider

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Answer with canned responses and keep the requests."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]

    @property
    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.requests[-1].content)
        return data


def openai_reply(text: str | None) -> httpx.Response:
    return httpx.Response(
        200, json={"choices": [{"message": {"role": "assistant", "content": text}}]}
    )


def anthropic_reply(*texts: str) -> httpx.Response:
    blocks = [{"type": "text", "text": t} for t in texts]
    return httpx.Response(200, json={"content": [*blocks, {"type": "tool_use", "name": "x"}]})


@pytest.mark.parametrize(
    ("cls", "url", "auth"),
    [
        (OpenAIProvider, "https://api.openai.com/v1/chat/completions", "authorization"),
        (MistralProvider, "https://api.mistral.ai/v1/chat/completions", "authorization"),
    ],
)
@pytest.mark.asyncio
async def test_openai_style_request_and_reply(
    cls: type[HttpLLMProvider], url: str, auth: str
) -> None:
    rec = Recorder(openai_reply("hello"))
    provider = cls(api_key="k-1", transport=httpx.MockTransport(rec))
    assert isinstance(provider, LLMProvider)
    assert await provider.complete("hi", system="be brief", temperature=0.2) == "hello"
    request = rec.requests[0]
    assert str(request.url) == url
    assert request.headers[auth] == "Bearer k-1"
    body = rec.body
    assert body["model"] == cls.default_model
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 1024


@pytest.mark.asyncio
async def test_anthropic_request_and_reply() -> None:
    rec = Recorder(anthropic_reply("hel", "lo"))
    provider = AnthropicProvider(
        api_key="a-1", model="claude-x", transport=httpx.MockTransport(rec)
    )
    assert await provider.complete("hi", system="sys", max_tokens=50) == "hello"
    request = rec.requests[0]
    assert str(request.url) == "https://api.anthropic.com/v1/messages"
    assert request.headers["x-api-key"] == "a-1"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert rec.body == {
        "model": "claude-x",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
        "system": "sys",
    }


@pytest.mark.asyncio
async def test_achat_with_history() -> None:
    rec = Recorder(openai_reply("ok"))
    provider = OpenAIProvider(api_key="k", transport=httpx.MockTransport(rec))
    history = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert await provider.achat(history) == "ok"
    assert rec.body["messages"] == history


@pytest.mark.asyncio
async def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", "from-env")
    rec = Recorder(openai_reply("x"))
    await MistralProvider(transport=httpx.MockTransport(rec)).complete("q")
    assert rec.requests[0].headers["authorization"] == "Bearer from-env"


@pytest.mark.asyncio
async def test_missing_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    provider = AnthropicProvider(transport=httpx.MockTransport(Recorder(anthropic_reply("x"))))
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        await provider.complete("q")


@pytest.mark.asyncio
async def test_base_url_for_compatible_servers() -> None:
    rec = Recorder(openai_reply("x"))
    provider = OpenAIProvider(
        api_key="k", base_url="http://localhost:8000/v1/", transport=httpx.MockTransport(rec)
    )
    await provider.complete("q")
    assert str(rec.requests[0].url) == "http://localhost:8000/v1/chat/completions"


@pytest.mark.asyncio
async def test_http_error_maps_to_transport_error() -> None:
    rec = Recorder(httpx.Response(401, json={"error": {"message": "bad key"}}))
    provider = OpenAIProvider(api_key="k", transport=httpx.MockTransport(rec))
    with pytest.raises(ProviderHTTPError, match="HTTP 401.*bad key") as info:
        await provider.complete("q")
    assert isinstance(info.value, TransportError)
    assert info.value.status_code == 401
    assert len(rec.requests) == 1  # not retried


@pytest.mark.asyncio
async def test_retries_429_and_5xx_then_succeeds() -> None:
    rec = Recorder(
        httpx.Response(429, headers={"retry-after": "0"}, json={"error": "slow down"}),
        httpx.Response(503, text="unavailable"),
        openai_reply("finally"),
    )
    provider = OpenAIProvider(api_key="k", backoff_sec=0, transport=httpx.MockTransport(rec))
    assert await provider.complete("q") == "finally"
    assert len(rec.requests) == 3


@pytest.mark.asyncio
async def test_retries_give_up() -> None:
    rec = Recorder(httpx.Response(500, text="boom"))
    provider = AnthropicProvider(
        api_key="k", max_retries=1, backoff_sec=0, transport=httpx.MockTransport(rec)
    )
    with pytest.raises(ProviderHTTPError, match="HTTP 500.*boom"):
        await provider.complete("q")
    assert len(rec.requests) == 2


@pytest.mark.asyncio
async def test_connection_failure_and_timeout() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(TransportError, match="request to .* failed"):
        await OpenAIProvider(api_key="k", transport=httpx.MockTransport(refuse)).complete("q")
    with pytest.raises(ConvergeTimeoutError, match="within 60.0 s"):
        await OpenAIProvider(api_key="k", transport=httpx.MockTransport(slow)).complete("q")


@pytest.mark.parametrize(
    ("cls", "response", "match"),
    [
        (OpenAIProvider, httpx.Response(200, text="<html>"), "not JSON"),
        (OpenAIProvider, httpx.Response(200, json={"nope": 1}), "choices"),
        (
            OpenAIProvider,
            httpx.Response(200, json={"choices": [{"message": {"content": 5}}]}),
            "not text",
        ),
        (MistralProvider, httpx.Response(200, json=[1, 2]), "choices"),
        (AnthropicProvider, httpx.Response(200, json={"content": "x"}), "content list"),
        (
            AnthropicProvider,
            httpx.Response(200, json={"content": [{"type": "text"}]}),
            "without text",
        ),
    ],
)
@pytest.mark.asyncio
async def test_malformed_replies(
    cls: type[HttpLLMProvider], response: httpx.Response, match: str
) -> None:
    provider = cls(api_key="k", transport=httpx.MockTransport(Recorder(response)))
    with pytest.raises(DecodeError, match=match):
        await provider.complete("q")


@pytest.mark.asyncio
async def test_empty_or_null_content_is_empty_text() -> None:
    rec = Recorder(openai_reply(None))
    assert await OpenAIProvider(api_key="k", transport=httpx.MockTransport(rec)).complete("q") == ""
    rec = Recorder(httpx.Response(200, json={"choices": []}))
    assert await OpenAIProvider(api_key="k", transport=httpx.MockTransport(rec)).complete("q") == ""


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "must not be empty"),
        ("hi", "list of dicts"),
        ([{"role": "robot", "content": "x"}], "role 'robot'"),
        ([{"role": "user", "content": 3}], "content must be a str"),
        (["x"], "must be a dict"),
    ],
)
@pytest.mark.asyncio
async def test_bad_chat_messages(messages: Any, match: str) -> None:
    provider = OpenAIProvider(
        api_key="k", transport=httpx.MockTransport(Recorder(openai_reply("")))
    )
    with pytest.raises(DecodeError, match=match):
        await provider.achat(messages)


@pytest.mark.asyncio
async def test_bad_prompt_and_system_only_anthropic() -> None:
    provider = AnthropicProvider(
        api_key="k", transport=httpx.MockTransport(Recorder(anthropic_reply()))
    )
    with pytest.raises(DecodeError, match="prompt must be a str"):
        await provider.complete(None)  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="at least one user"):
        await provider.achat([{"role": "system", "content": "s"}])


@pytest.mark.asyncio
async def test_lifecycle_reuses_one_client_and_closes() -> None:
    rec = Recorder(openai_reply("a"))
    async with OpenAIProvider(api_key="k", transport=httpx.MockTransport(rec)) as provider:
        await provider.complete("1")
        await provider.complete("2")
    assert len(rec.requests) == 2
    with pytest.raises(ClosedError, match="stopped"):
        await provider.complete("3")
    await provider.stop()  # idempotent


@pytest.mark.asyncio
async def test_given_client_is_used_and_left_open() -> None:
    rec = Recorder(openai_reply("a"))
    async with httpx.AsyncClient(transport=httpx.MockTransport(rec)) as client:
        async with MistralProvider(api_key="k", client=client) as provider:
            assert await provider.complete("q") == "a"
        assert not client.is_closed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_sec": 0},
        {"max_tokens": 0},
        {"max_retries": -1},
        {"transport": httpx.MockTransport(Recorder(openai_reply(""))), "client": object()},
    ],
)
def test_bad_config(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        OpenAIProvider(api_key="k", **kwargs)


@pytest.mark.asyncio
async def test_missing_httpx_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "httpx", None)
    provider = OpenAIProvider(api_key="k")
    with pytest.raises(ConfigError, match=r"converge\[llm\]"):
        await provider.complete("q")
