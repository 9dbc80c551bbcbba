"""Mistral AI chat completions over HTTP."""

from __future__ import annotations

from typing import ClassVar

from converge.extensions.llm.openai import OpenAICompatibleProvider

__all__ = ["MistralProvider"]


class MistralProvider(OpenAICompatibleProvider):
    """Mistral chat models; the key comes from ``api_key`` or ``MISTRAL_API_KEY``.

    See :class:`~converge.extensions.llm.base.HttpLLMProvider` for timeouts,
    retries and errors.
    """

    env_var: ClassVar[str] = "MISTRAL_API_KEY"
    default_base_url: ClassVar[str] = "https://api.mistral.ai/v1"
    default_model: ClassVar[str] = "mistral-small-latest"
    name: ClassVar[str] = "mistral"
