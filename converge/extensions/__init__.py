"""Optional parts: storage backends, symmetric crypto, LLM providers."""
