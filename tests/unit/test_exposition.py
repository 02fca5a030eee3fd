"""Unit tests of the fast exposition renderer: the same text as prometheus_client's generate_latest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from monitor.exposition import TextGauge, render


class Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def registry(*families: Metric) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(Families(list(families)))
    return reg


def test_gauges_counters_and_histograms_render_as_generate_latest_does() -> None:
    gauge = GaugeMetricFamily("callpulse_team_kpi", "KPI per team\\n and window", labels=["team", "kpi", "window"])
    gauge.add_metric(['te"am\\x\n', "aht_seconds", "15m"], 312.5)
    gauge.add_metric(["b", "occupancy", "today"], 0.8333333333333334)
    gauge.add_metric(["c", "nan", "1h"], float("nan"))
    counter = CounterMetricFamily("callpulse_events", "Events", labels=["topic", "result"])
    counter.add_metric(["calls", "ok"], 12)
    hist = HistogramMetricFamily("callpulse_event_lag_seconds", "Lag")
    hist.add_metric([], [("0.1", 3), ("1.0", 5), ("+Inf", 6)], 2.5)
    plain = GaugeMetricFamily("callpulse_monitor_clients", "Clients")
    plain.add_metric([], 3)
    reg = registry(gauge, counter, hist, plain)
    assert render(reg) == generate_latest(reg)


def test_an_openmetrics_only_sample_is_refused_with_its_name() -> None:
    counter = CounterMetricFamily("callpulse_x", "X", labels=["a"], created=5.0)
    counter.add_metric(["1"], 1, created=5.0)
    with pytest.raises(ValueError, match="callpulse_x_created"):
        render(registry(counter))


def test_a_text_gauge_renders_as_the_same_gauge_family_does() -> None:
    labels = ["team", "kpi", "window"]
    rows = [(['te"am\\x\n', "aht_seconds", "15m"], 312.5), (["b{1}", "occupancy", "today"], 0.8333333333333334),
            (["c", "nan", "1h"], float("nan")), (["d", "calls", "8h"], 12)]  # fmt: skip
    family = GaugeMetricFamily("callpulse_team_kpi", "KPI per team\\n and window", labels=labels)
    text = TextGauge("callpulse_team_kpi", "KPI per team\\n and window", labels)
    for values, value in rows:
        family.add_metric(values, value)
        text.add_metric(values, value)
    assert render(registry(text)) == generate_latest(registry(family))  # type: ignore[arg-type]
