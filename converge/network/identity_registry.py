"""Map agent ids to Ed25519 public keys, for verifying received messages."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from converge.core.identity import KEY_SIZE, Identity
from converge.errors import ConfigError

__all__ = ["IdentityRegistry"]

logger = logging.getLogger(__name__)


def _key_bytes(public_key: bytes | Identity, agent_id: str) -> bytes:
    if isinstance(public_key, Identity):
        return public_key.public_key
    if not isinstance(public_key, bytes | bytearray | memoryview):
        raise ConfigError(
            f"public key for agent {agent_id!r} must be {KEY_SIZE} bytes or an Identity, "
            f"got {type(public_key).__name__}"
        )
    raw = bytes(public_key)
    if not raw:
        raise ConfigError(f"public key for agent {agent_id!r} is empty")
    if len(raw) != KEY_SIZE:
        logger.warning(
            "public key for agent %r is %d bytes, not a %d-byte Ed25519 key: "
            "its messages will fail verification",
            agent_id,
            len(raw),
            KEY_SIZE,
        )
    return raw


class IdentityRegistry:
    """Known agents and their public keys; the trust anchor of verified receive.

    An agent id is usually the fingerprint of its key, but any string works: the
    registry only answers "which key signs for this sender". Plain in-memory state,
    safe to share between transports of one event loop.
    """

    def __init__(self, identities: dict[str, bytes] | None = None) -> None:
        self._keys: dict[str, bytes] = {}
        for agent_id, key in (identities or {}).items():
            self.register(agent_id, key)

    def register(
        self, agent_id: str | Identity, public_key: bytes | Identity | None = None
    ) -> None:
        """Record the public key that signs for ``agent_id`` (replacing an older one).

        ``register(identity)`` registers ``identity.fingerprint`` with its key.
        Any non-empty bytes are kept, as in the seed design; a key that is not 32 raw
        Ed25519 bytes is logged and never verifies a message. Raises ``ConfigError``
        for a missing or empty key or one that is not bytes.
        """
        if isinstance(agent_id, Identity):
            identity = agent_id
            agent_id = identity.fingerprint
            if public_key is None:
                public_key = identity
        if not isinstance(agent_id, str) or not agent_id:
            raise ConfigError(f"agent id must be a non-empty str, got {agent_id!r}")
        if public_key is None:
            raise ConfigError(f"register({agent_id!r}) needs a public key or an Identity")
        self._keys[agent_id] = _key_bytes(public_key, agent_id)

    def unregister(self, agent_id: str) -> None:
        """Forget ``agent_id``; no-op when unknown."""
        self._keys.pop(agent_id, None)

    def get(self, agent_id: str) -> bytes | None:
        """Return the public key registered for ``agent_id``, or ``None``."""
        return self._keys.get(agent_id)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys))
