"""OpenAI chat completions over HTTP (also any OpenAI-compatible endpoint)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from converge.errors import DecodeError
from converge.extensions.llm.base import ChatMessage, HttpLLMProvider

__all__ = ["OpenAICompatibleProvider", "OpenAIProvider"]


class OpenAICompatibleProvider(HttpLLMProvider):
    """Speak the ``/chat/completions`` protocol with a bearer key."""

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    def _endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _body(self, messages: Sequence[ChatMessage], options: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": options.pop("model", self.model),
            "messages": list(messages),
            "max_tokens": options.pop("max_tokens", self.max_tokens),
        }
        body.update(options)
        return body

    def _parse(self, data: Any) -> str:
        try:
            choices = data["choices"]
            if not choices:
                return ""
            content = choices[0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise DecodeError(
                f"{self.name}: reply has no choices[0].message: {str(data)[:200]}"
            ) from exc
        if content is None:
            return ""
        if not isinstance(content, str):
            raise DecodeError(f"{self.name}: message content is not text: {content!r:.200}")
        return content


class OpenAIProvider(OpenAICompatibleProvider):
    """OpenAI chat models; the key comes from ``api_key`` or ``OPENAI_API_KEY``.

    ``base_url`` (default ``https://api.openai.com/v1``) points it at any
    OpenAI-compatible server. See :class:`~converge.extensions.llm.base.HttpLLMProvider`
    for timeouts, retries and errors.
    """

    env_var: ClassVar[str] = "OPENAI_API_KEY"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    default_model: ClassVar[str] = "gpt-4o-mini"
    name: ClassVar[str] = "openai"
