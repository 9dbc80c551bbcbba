"""In-process metrics: counters and gauges with labels, Prometheus text output.

No threads and no locks: a collector belongs to one event loop (or one thread).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from converge.errors import ConfigError

__all__ = ["MetricsCollector"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_:]")

LabelKey = tuple[tuple[str, str], ...]


def _metric_name(name: object) -> str:
    """Return ``name`` with ``.`` and ``-`` (and other unsafe characters) as ``_``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"metric name must be a non-empty str, got {name!r}")
    safe = _UNSAFE.sub("_", name)
    if safe[0].isdigit():
        safe = "_" + safe
    if not _NAME.match(safe):  # pragma: no cover - the substitutions guarantee a match
        raise ConfigError(f"metric name {name!r} cannot be made Prometheus-safe")
    return safe


def _labels(labels: Mapping[str, object]) -> LabelKey:
    out: list[tuple[str, str]] = []
    for key, value in labels.items():
        if not _LABEL.match(key) or key.startswith("__"):
            raise ConfigError(f"metric label name {key!r} is invalid; use letters, digits, '_'")
        if value is None:
            continue
        out.append((key, str(value)))
    return tuple(sorted(out))


def _number(value: object, what: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return value


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series(name: str, labels: LabelKey) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{name}{{{inner}}}"


def _format_value(value: int | float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


class MetricsCollector:
    """Count events and record current values, optionally per label set.

    ``inc("messages_sent", agent_id="a1")``; ``gauge("inbox_size", 3)``. Names are
    made Prometheus-safe (``.`` and ``-`` become ``_``); a name is either a counter
    or a gauge, never both. Label values are turned into text; ``None`` labels are
    dropped. Raises ``ConfigError`` for bad names, labels or values.
    """

    def __init__(self, *, prefix: str = "") -> None:
        self.prefix = _metric_name(prefix) if prefix else ""
        self._counters: dict[str, dict[LabelKey, int | float]] = {}
        self._gauges: dict[str, dict[LabelKey, int | float]] = {}
        self._help: dict[str, str] = {}

    def _name(self, name: str) -> str:
        return self.prefix + _metric_name(name)

    def inc(self, name: str, value: int | float = 1, **labels: object) -> None:
        """Add ``value`` (>= 0) to the counter ``name`` for ``labels``."""
        metric = self._name(name)
        amount = _number(value, f"counter {name!r} increment")
        if amount < 0:
            raise ConfigError(f"counter {name!r} can only go up; got increment {value!r}")
        if metric in self._gauges:
            raise ConfigError(f"metric {name!r} is a gauge; use gauge() or another name")
        series = self._counters.setdefault(metric, {})
        key = _labels(labels)
        series[key] = series.get(key, 0) + amount

    def gauge(self, name: str, value: int | float, **labels: object) -> None:
        """Set the gauge ``name`` for ``labels`` to ``value``."""
        metric = self._name(name)
        number = _number(value, f"gauge {name!r} value")
        if metric in self._counters:
            raise ConfigError(f"metric {name!r} is a counter; use inc() or another name")
        self._gauges.setdefault(metric, {})[_labels(labels)] = number

    def describe(self, name: str, help_text: str) -> None:
        """Attach a ``# HELP`` line to ``name`` in the Prometheus output."""
        self._help[self._name(name)] = help_text.replace("\\", "\\\\").replace("\n", "\\n")

    def get(self, name: str, **labels: object) -> int | float | None:
        """Return the current value of ``name`` for ``labels``, or ``None`` if never set."""
        metric = self._name(name)
        key = _labels(labels)
        for table in (self._counters, self._gauges):
            if metric in table:
                return table[metric].get(key)
        return None

    def reset(self) -> None:
        """Forget every metric."""
        self._counters.clear()
        self._gauges.clear()

    def snapshot(self) -> dict[str, Any]:
        """Return ``{"counters": {...}, "gauges": {...}}``, keyed by series.

        A series without labels is keyed by its name (``"requests"``); with labels
        by its Prometheus form (``'requests{agent_id="a1"}'``).
        """
        return {
            "counters": {
                _series(name, key): value
                for name, series in sorted(self._counters.items())
                for key, value in sorted(series.items())
            },
            "gauges": {
                _series(name, key): value
                for name, series in sorted(self._gauges.items())
                for key, value in sorted(series.items())
            },
        }

    def format_prometheus(self) -> str:
        """Return every metric in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        for kind, table in (("counter", self._counters), ("gauge", self._gauges)):
            for name, series in sorted(table.items()):
                if name in self._help:
                    lines.append(f"# HELP {name} {self._help[name]}")
                lines.append(f"# TYPE {name} {kind}")
                for key, value in sorted(series.items()):
                    lines.append(f"{_series(name, key)} {_format_value(value)}")
        return "\n".join(lines) + "\n" if lines else ""

    def __repr__(self) -> str:
        return f"MetricsCollector(counters={len(self._counters)}, gauges={len(self._gauges)})"
