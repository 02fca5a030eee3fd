"""Small statistics helpers: nearest-rank percentiles and quantiles of the worker's coarse lag histogram."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from streams.batch import LAG_BOUNDS_S


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def histogram_quantile(stats: Mapping[str, int], q: float) -> float | None:
    """Upper bound (s) of the worker's lag-histogram bucket holding quantile q; inf past the last; None if empty."""
    n = sum(stats.get(f"lag|{i}", 0) for i in range(1, len(LAG_BOUNDS_S) + 2))
    if n == 0:
        return None
    target = q * n
    running = 0
    for i, bound in enumerate(LAG_BOUNDS_S, start=1):
        running += stats.get(f"lag|{i}", 0)
        if running >= target:
            return bound
    return math.inf


def diff_counts(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """Per-key difference of two counter snapshots."""
    return {k: v - before.get(k, 0) for k, v in after.items()}


def span(seconds: float) -> str:
    """A span of time for the report: '1 h', '5 min'."""
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"
