"""MetricsCollector: counters, gauges, labels, Prometheus output, bad input."""

from __future__ import annotations

from typing import Any

import pytest

from converge.errors import ConfigError
from converge.observability.metrics import MetricsCollector


def test_counters_and_gauges() -> None:
    mc = MetricsCollector()
    mc.inc("requests")
    mc.inc("requests", 2)
    mc.gauge("latency", 0.5)
    snap = mc.snapshot()
    assert snap["counters"]["requests"] == 3
    assert snap["gauges"]["latency"] == 0.5
    assert mc.get("requests") == 3
    assert mc.get("missing") is None


def test_labels_make_series() -> None:
    mc = MetricsCollector()
    mc.inc("messages_sent", agent_id="a1")
    mc.inc("messages_sent", agent_id="a1")
    mc.inc("messages_sent", agent_id="a2", topic=None)
    assert mc.get("messages_sent", agent_id="a1") == 2
    assert mc.get("messages_sent", agent_id="a2") == 1
    snap = mc.snapshot()["counters"]
    assert snap == {'messages_sent{agent_id="a1"}': 2, 'messages_sent{agent_id="a2"}': 1}


def test_prometheus_format() -> None:
    mc = MetricsCollector()
    mc.inc("decisions_executed")
    mc.inc("messages_sent", 2)
    mc.gauge("queue_size", 5.0)
    mc.gauge("inbox.size", 3, agent_id='we"ird\\id\n')
    mc.describe("queue_size", "items waiting")
    out = mc.format_prometheus()
    assert out.endswith("\n")
    lines = out.splitlines()
    assert "# TYPE decisions_executed counter" in lines
    assert "decisions_executed 1" in lines
    assert "messages_sent 2" in lines
    assert "# HELP queue_size items waiting" in lines
    assert "# TYPE queue_size gauge" in lines
    assert "queue_size 5.0" in lines
    assert 'inbox_size{agent_id="we\\"ird\\\\id\\n"} 3' in lines


def test_empty_collector_formats_to_empty_string() -> None:
    assert MetricsCollector().format_prometheus() == ""


def test_names_are_made_safe_and_prefixed() -> None:
    mc = MetricsCollector(prefix="converge_")
    mc.inc("tasks.claimed-total")
    mc.inc("9lives")
    assert "converge_tasks_claimed_total 1" in mc.format_prometheus()
    assert mc.get("tasks.claimed-total") == 1
    assert "converge__9lives 1" in mc.format_prometheus()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda mc: mc.inc("x", -1), "only go up"),
        (lambda mc: mc.inc("x", float("nan")), "finite number"),
        (lambda mc: mc.inc("x", "1"), "finite number"),
        (lambda mc: mc.gauge("x", None), "finite number"),
        (lambda mc: mc.gauge("x", True), "finite number"),
        (lambda mc: mc.inc(""), "non-empty"),
        (lambda mc: mc.inc("x", **{"bad-label": 1}), "label name"),
        (lambda mc: mc.inc("x", __reserved=1), "label name"),
    ],
)
def test_bad_input(call: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call(MetricsCollector())


def test_kind_clash() -> None:
    mc = MetricsCollector()
    mc.inc("a")
    mc.gauge("b", 1)
    with pytest.raises(ConfigError, match="is a counter"):
        mc.gauge("a", 1)
    with pytest.raises(ConfigError, match="is a gauge"):
        mc.inc("b")
    mc.reset()
    mc.gauge("a", 2)
    assert mc.snapshot() == {"counters": {}, "gauges": {"a": 2}}
