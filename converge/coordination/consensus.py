"""Vote counting, as the seed placed it; it lives in :mod:`converge.policy.consensus`."""

from __future__ import annotations

from converge.policy.consensus import Consensus

__all__ = ["Consensus"]
