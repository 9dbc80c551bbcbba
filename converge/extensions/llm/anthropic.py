"""Anthropic Messages API over HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from converge.errors import DecodeError
from converge.extensions.llm.base import ChatMessage, HttpLLMProvider

__all__ = ["AnthropicProvider"]

API_VERSION = "2023-06-01"


class AnthropicProvider(HttpLLMProvider):
    """Claude models; the key comes from ``api_key`` or ``ANTHROPIC_API_KEY``.

    System turns are sent as the request's ``system`` field; the reply's text
    blocks are joined. See :class:`~converge.extensions.llm.base.HttpLLMProvider`
    for timeouts, retries and errors.
    """

    env_var: ClassVar[str] = "ANTHROPIC_API_KEY"
    default_base_url: ClassVar[str] = "https://api.anthropic.com/v1"
    default_model: ClassVar[str] = "claude-sonnet-4-20250514"
    name: ClassVar[str] = "anthropic"

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key, "anthropic-version": API_VERSION}

    def _endpoint(self) -> str:
        return f"{self.base_url}/messages"

    def _body(self, messages: Sequence[ChatMessage], options: dict[str, Any]) -> dict[str, Any]:
        system = [m["content"] for m in messages if m["role"] == "system"]
        turns = [dict(m) for m in messages if m["role"] != "system"]
        if not turns:
            raise DecodeError("anthropic: at least one user or assistant message is needed")
        body: dict[str, Any] = {
            "model": options.pop("model", self.model),
            "max_tokens": options.pop("max_tokens", self.max_tokens),
            "messages": turns,
        }
        if system:
            body["system"] = "\n\n".join(system)
        body.update(options)
        return body

    def _parse(self, data: Any) -> str:
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise DecodeError(f"anthropic: reply has no content list: {str(data)[:200]}")
        parts: list[str] = []
        for block in data["content"]:
            if isinstance(block, dict) and block.get("type") == "text":
                text = block.get("text")
                if not isinstance(text, str):
                    raise DecodeError(f"anthropic: text block without text: {block!r:.200}")
                parts.append(text)
        return "".join(parts)
