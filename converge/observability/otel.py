"""OpenTelemetry wiring: converge's instruments, SDK set-up from ``OTEL_*``, ``/metrics``.

The library records through the OpenTelemetry **API** only: with no SDK configured,
every instrument and span here is a no-op. An application (or ``converge run``) turns
them on:

- :func:`configure_tracing` installs an SDK tracer provider from the standard variables
  (``OTEL_SERVICE_NAME``, ``OTEL_TRACES_EXPORTER=console|otlp|none``,
  ``OTEL_EXPORTER_OTLP_ENDPOINT``); it needs the ``otel`` extra.
- :func:`serve_metrics` installs an SDK meter provider with the Prometheus reader of
  ``opentelemetry-exporter-prometheus`` and serves ``/metrics`` from an asyncio server
  (no thread). OpenTelemetry names become Prometheus names the usual way:
  ``converge.tasks.completed`` is ``converge_tasks_completed_total``.

The instruments (:data:`instruments`): tasks submitted, claimed, completed, failed and
expired, claim conflicts, append duration, projection lag, inbox depth and decisions
by type.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Protocol

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace

from converge.errors import ConfigError

__all__ = [
    "Instruments",
    "MetricsServer",
    "configure_tracing",
    "instruments",
    "serve_metrics",
    "watch_inbox",
    "watch_projection",
]

logger = logging.getLogger(__name__)

METER = "converge"


class _Sized(Protocol):
    def __len__(self) -> int: ...


class _Lagging(Protocol):
    @property
    def lag(self) -> int: ...

    @property
    def name(self) -> str: ...


_inboxes: weakref.WeakSet[_Sized] = weakref.WeakSet()
_projections: weakref.WeakSet[_Lagging] = weakref.WeakSet()


def watch_inbox(inbox: _Sized) -> None:
    """Report ``len(inbox)`` in the inbox depth gauge while the inbox lives."""
    _inboxes.add(inbox)


def watch_projection(runner: _Lagging) -> None:
    """Report ``runner.lag`` (events behind its streams) while the runner lives."""
    _projections.add(runner)


def _inbox_depth(_: otel_metrics.CallbackOptions) -> Iterable[otel_metrics.Observation]:
    yield otel_metrics.Observation(sum(len(inbox) for inbox in list(_inboxes)))


def _projection_lag(_: otel_metrics.CallbackOptions) -> Iterable[otel_metrics.Observation]:
    lags: dict[str, int] = {}
    for runner in list(_projections):
        lags[runner.name] = max(lags.get(runner.name, 0), runner.lag)
    for name, lag in lags.items():
        yield otel_metrics.Observation(lag, {"projection": name})


#: event type -> the task counter an append of it moves
_TASK_COUNTERS = {
    "task.submitted": "submitted",
    "task.claimed": "claimed",
    "task.reported": "completed",
    "task.failed": "failed",
}


class Instruments:
    """converge's OpenTelemetry instruments (no-ops until an SDK meter provider is set)."""

    def __init__(self, meter: otel_metrics.Meter) -> None:
        self.tasks = {
            key: meter.create_counter(f"converge.tasks.{key}", description=f"Tasks {key}")
            for key in ("submitted", "claimed", "completed", "failed", "expired")
        }
        self.claim_conflicts = meter.create_counter(
            "converge.claim.conflicts", description="Appends refused by a concurrency check"
        )
        self.append_duration = meter.create_histogram(
            "converge.append.duration", unit="s", description="Event append, to the broker's ack"
        )
        self.decisions = meter.create_counter(
            "converge.decisions", description="Decisions executed, by type and outcome"
        )
        meter.create_observable_gauge(
            "converge.projection.lag",
            callbacks=[_projection_lag],
            description="Events stored but not yet applied, per projection",
        )
        meter.create_observable_gauge(
            "converge.inbox.depth",
            callbacks=[_inbox_depth],
            description="Messages waiting in the runtimes' inboxes",
        )

    def appended(self, event_type: str, reason: str | None, duration_sec: float) -> None:
        """Count one acknowledged append of ``event_type`` and its duration."""
        self.append_duration.record(duration_sec, {"event.type": event_type})
        key = _TASK_COUNTERS.get(event_type)
        if key is not None:
            self.tasks[key].add(1)
        elif event_type == "task.claim_released" and reason == "expired":
            self.tasks["expired"].add(1)

    def conflict(self, subject_kind: str) -> None:
        """Count one append lost to a concurrent writer."""
        self.claim_conflicts.add(1, {"stream": subject_kind})

    def decision(self, decision_type: str, ok: bool) -> None:
        """Count one executed decision."""
        self.decisions.add(1, {"decision.type": decision_type, "ok": ok})


instruments = Instruments(otel_metrics.get_meter(METER))
"""The process's instruments; the global meter provider decides where they go."""


def _sdk_missing(what: str, exc: ImportError) -> ConfigError:
    return ConfigError(
        f"{what} needs the OpenTelemetry SDK: pip install 'converge[otel]' ({exc.name} missing)"
    )


def configure_tracing(service_name: str | None = None) -> bool:
    """Install an SDK tracer provider as ``OTEL_*`` says; return whether tracing is on.

    ``OTEL_TRACES_EXPORTER``: ``console`` (spans as JSON on stderr), ``otlp`` (to
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, HTTP), ``none`` or unset: nothing is installed
    and tracing stays off. ``OTEL_SERVICE_NAME`` (else ``service_name``) names the
    process. Raises ``ConfigError`` for another exporter or a missing SDK.
    """
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter_name in ("", "none"):
        return False
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
            SpanExporter,
        )
    except ImportError as exc:
        raise _sdk_missing("OTEL_TRACES_EXPORTER", exc) from None
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise _sdk_missing("OTEL_TRACES_EXPORTER=otlp", exc) from None
        exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_ENDPOINT itself
    else:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={exporter_name!r} is not supported; use console, otlp or none"
        )
    named = os.environ.get("OTEL_SERVICE_NAME")
    attrs = {} if named else {SERVICE_NAME: service_name or "converge"}
    provider = TracerProvider(resource=Resource.create(attrs))
    if exporter_name == "console":
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    otel_trace.set_tracer_provider(provider)
    return True


class MetricsServer:
    """A running ``/metrics`` endpoint: its address, and ``url``."""

    def __init__(self, server: asyncio.Server, render: Callable[[], bytes]) -> None:
        self._server = server
        self._render = render
        sock = server.sockets[0].getsockname()
        self.host: str = sock[0]
        self.port: int = sock[1]

    @property
    def url(self) -> str:
        """The scrape URL."""
        return f"http://{self.host}:{self.port}/metrics"


_READ_TIMEOUT_SEC = 5.0


def _metrics_renderer() -> Callable[[], bytes]:
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from prometheus_client import REGISTRY, generate_latest
    except ImportError as exc:
        raise _sdk_missing("--metrics-port", exc) from None
    provider = otel_metrics.get_meter_provider()
    if not isinstance(provider, MeterProvider):
        reader = PrometheusMetricReader()
        otel_metrics.set_meter_provider(
            MeterProvider(resource=Resource.create({}), metric_readers=[reader])
        )
    return lambda: generate_latest(REGISTRY)


@contextlib.asynccontextmanager
async def serve_metrics(host: str = "127.0.0.1", port: int = 9464) -> AsyncIterator[MetricsServer]:
    """Serve the process's metrics for Prometheus at ``http://host:port/metrics``.

    Installs an SDK meter provider with a Prometheus reader (the ``otel`` extra) unless
    one is installed already. The server is an asyncio server in this event loop; it
    stops when the block exits. ``port=0`` picks a free port. Raises ``ConfigError``
    when the SDK or exporter is missing, ``OSError`` when the port is taken.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"metrics port must be an int in 0..65535, got {port!r}")
    render = _metrics_renderer()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_SEC):
                request = await reader.readuntil(b"\r\n\r\n")
            line = request.split(b"\r\n", 1)[0].split()
            if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
                body, status = render(), b"200 OK"
                ctype = b"text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, ctype = b"not found; try /metrics\n", b"404 Not Found", b"text/plain"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n" + body
            )  # fmt: skip
            async with asyncio.timeout(_READ_TIMEOUT_SEC):
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that sends nothing useful or goes away gets nothing
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    metrics_server = MetricsServer(server, render)
    logger.info("metrics at %s", metrics_server.url)
    try:
        yield metrics_server
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_READ_TIMEOUT_SEC):
                await server.wait_closed()
