"""Observability: structured logging, OpenTelemetry tracing, metrics, message replay."""

from __future__ import annotations

from converge.observability.logging import JsonFormatter, configure_logging, get_logger, log_struct
from converge.observability.metrics import MetricsCollector
from converge.observability.replay import ReplayLog, ReplayRunner
from converge.observability.tracing import (
    extract_context,
    get_current_trace_id,
    inject_headers,
    register_span_exporter,
    trace,
)

__all__ = [
    "JsonFormatter",
    "MetricsCollector",
    "ReplayLog",
    "ReplayRunner",
    "configure_logging",
    "extract_context",
    "get_current_trace_id",
    "get_logger",
    "inject_headers",
    "log_struct",
    "register_span_exporter",
    "trace",
]
