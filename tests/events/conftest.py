from __future__ import annotations

import sys

import pytest

# Rich assertion messages in the shipped contract suite; only possible before its import.
if "events.testing" not in sys.modules:
    pytest.register_assert_rewrite("events.testing")
