"""The Prometheus text format for callpulse's own metric families, fast enough for ~100,000 samples a scrape.

prometheus_client's `generate_latest` validates and escapes every label name of every sample (about 30 µs a
sample in 0.26): at 10,000 agents `/metrics/agents` spent seconds there. Our families use fixed, valid metric and
label names, so only label values need escaping; the output is the same text (`tests/unit/test_exposition.py`
compares the two). Families with OpenMetrics-only samples (`_created`, `_gsum`, `_gcount`) are not produced
by callpulse and are refused here.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary", "unknown": "untyped"}


def _escape_value(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


class TextGauge:
    """A gauge family for tens of thousands of samples: each sample is written as its text line when added (no
    Sample objects), in the same text `render` gives a GaugeMetricFamily (labels sorted by name)."""

    type = "gauge"

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        order = sorted(range(len(labels)), key=lambda i: labels[i])
        self._order = order
        inner = ",".join(f'{labels[i]}="{{{n}}}"' for n, i in enumerate(order))
        self._format = (name + "{{" + inner + "}} {value}\n") if labels else (name + " {value}\n")
        self.lines: list[str] = []

    def add_metric(self, values: Sequence[str], value: float) -> None:
        """One sample: label values in the order of `labels`, and its value."""
        self.lines.append(self.line(values, value))

    def line(self, values: Sequence[str], value: float) -> str:
        """A sample's text line (add it to `lines` yourself: a caller may keep lines between scrapes)."""
        return self._format.format(*[_escape_value(values[i]) for i in self._order], value=floatToGoString(value))


Family = Metric | TextGauge  # what callpulse's collectors yield


def render(registry: CollectorRegistry) -> bytes:
    """Every family the registry's collectors yield, as Prometheus text format 0.0.4."""
    out: list[str] = []
    for metric in registry.collect():
        if isinstance(metric, TextGauge):
            doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            out.append(f"# HELP {metric.name} {doc}\n# TYPE {metric.name} gauge\n")
            out.extend(metric.lines)
            continue
        mtype = _TYPES.get(metric.type)
        if mtype is None:
            raise ValueError(f"metric {metric.name}: type {metric.type!r} is not rendered here; use generate_latest")
        name = metric.name + "_total" if metric.type == "counter" else metric.name
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {mtype}\n")
        for s in metric.samples:
            if s.name.endswith(("_created", "_gsum", "_gcount")) and s.name != name:
                raise ValueError(f"metric {metric.name}: OpenMetrics sample {s.name} is not rendered here")
            if s.labels:
                labels = ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(s.labels.items()))
                out.append(f"{s.name}{{{labels}}} {floatToGoString(s.value)}\n")
            else:
                out.append(f"{s.name} {floatToGoString(s.value)}\n")
    return "".join(out).encode()
