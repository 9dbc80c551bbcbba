"""Language-model providers (httpx, extra ``llm``) and the LLM-driven agent."""

from __future__ import annotations

from converge.extensions.llm.agent import LLMAgent
from converge.extensions.llm.anthropic import AnthropicProvider
from converge.extensions.llm.base import HttpLLMProvider, LLMProvider, ProviderHTTPError
from converge.extensions.llm.mistral import MistralProvider
from converge.extensions.llm.openai import OpenAIProvider

__all__ = [
    "AnthropicProvider",
    "HttpLLMProvider",
    "LLMAgent",
    "LLMProvider",
    "MistralProvider",
    "OpenAIProvider",
    "ProviderHTTPError",
]
