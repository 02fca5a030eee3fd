"""The weighted scorecard: points per KPI and a score per agent, team and floor over one window. Pure.

Points for one KPI of weight w (value v, null earns 0):
  target T, higher is better:   w * min(1, v / T)          (never below 0)
  target T, lower is better:    w * min(1, T / v); v <= 0 earns all
  target_range [lo, hi]:        inside: w; below lo: w * v / lo; above hi: w * hi / v
An agent's score is the sum of its points; a team's and the floor's the mean of their agents' scores,
over the agents with at least one event in the scorecard's window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from callpulse import catalogue
from callpulse.exceptions import SettingsError

SCORE_KEYS = ("weight", "target", "target_range", "better")


@dataclass(frozen=True)
class ScoreKpi:
    """One KPI of the scorecard: its weight and its target (or target range)."""

    kpi: str
    weight: float
    target: float | None = None
    target_range: tuple[float, float] | None = None
    better: str = "higher"

    def points(self, value: float | None) -> float:
        """Points this KPI earns for `value`; None (no denominator in the window) earns 0."""
        if value is None:
            return 0.0
        w = self.weight
        if self.target_range is not None:
            lo, hi = self.target_range
            if value < lo:
                return w * max(0.0, value) / lo
            if value > hi:
                return w * hi / value
            return w
        assert self.target is not None
        if self.better == "lower":
            return w if value <= 0 else w * min(1.0, self.target / value)
        return w * max(0.0, min(1.0, value / self.target))


@dataclass(frozen=True)
class Scorecard:
    """The `[scorecard]` table: the window it scores and its KPIs."""

    window: str
    kpis: tuple[ScoreKpi, ...]

    @property
    def total_weight(self) -> float:
        """The most points an agent can earn."""
        return sum(k.weight for k in self.kpis)

    def points(self, values: Mapping[str, float | int | None]) -> dict[str, float]:
        """Points per KPI of the scorecard."""
        return {k.kpi: k.points(values.get(k.kpi)) for k in self.kpis}

    def score(self, values: Mapping[str, float | int | None]) -> float:
        """An agent's score: the sum of its points."""
        return sum(self.points(values).values())


def mean_score(scores: Iterable[float]) -> float | None:
    """A team's or the floor's score: the mean of its (eligible) agents' scores; None with no agent.

    Summed exactly (Fraction: a float's exact value), so the mean is correctly rounded and does not depend on the
    order of the agents: the monitor's floor cache keeps the same mean from running exact sums.
    """
    exact = [Fraction(s) for s in scores]
    return float(sum(exact, Fraction(0)) / len(exact)) if exact else None


def _number(value: Any, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{name} is {value!r}, must be a number")
    if positive and value <= 0:
        raise SettingsError(f"{name} is {value!r}, must be > 0")
    return float(value)


def _parse_kpi(key: str, raw: Any) -> ScoreKpi:
    where = f"scorecard.kpi.{key}"
    if key not in catalogue.BY_KEY:
        raise SettingsError(f"scorecard.kpi: unknown KPI {key!r}, must be one of {', '.join(catalogue.KPI_KEYS)}")
    if not isinstance(raw, dict):
        raise SettingsError(f"{where} must be a table of {', '.join(SCORE_KEYS)}")
    for name in raw:
        if name not in SCORE_KEYS:
            raise SettingsError(f"{where}.{name}: unknown key, must be one of {', '.join(SCORE_KEYS)}")
    if "weight" not in raw:
        raise SettingsError(f"{where}: needs a weight (points the KPI is worth)")
    weight = _number(raw["weight"], f"{where}.weight", positive=True)
    better = raw.get("better", catalogue.BY_KEY[key].better)
    if better not in ("higher", "lower"):
        raise SettingsError(f"{where}.better is {better!r}, must be 'higher' or 'lower'")
    if ("target" in raw) == ("target_range" in raw):
        raise SettingsError(f"{where}: set either target or target_range = [lo, hi]")
    if "target" in raw:
        return ScoreKpi(key, weight, target=_number(raw["target"], f"{where}.target", positive=True), better=better)
    pair = raw["target_range"]
    if not isinstance(pair, list) or len(pair) != 2:
        raise SettingsError(f"{where}.target_range is {pair!r}, must be [lo, hi]")
    lo = _number(pair[0], f"{where}.target_range[0]", positive=True)
    hi = _number(pair[1], f"{where}.target_range[1]", positive=True)
    if hi < lo:
        raise SettingsError(f"{where}.target_range is {pair!r}, lo must be <= hi")
    return ScoreKpi(key, weight, target_range=(lo, hi), better=better)


def parse(raw: Any, window_names: tuple[str, ...]) -> Scorecard:
    """Build the Scorecard from the `[scorecard]` TOML table; errors name the key and the fix."""
    if not isinstance(raw, dict):
        raise SettingsError("scorecard must be a table with window and [scorecard.kpi.<key>] tables")
    for name in raw:
        if name not in ("window", "kpi"):
            raise SettingsError(f"scorecard.{name}: unknown key, must be 'window' or [scorecard.kpi.<key>]")
    window = raw.get("window", "today" if "today" in window_names else window_names[-1])
    if window not in window_names:
        raise SettingsError(f"scorecard.window is {window!r}, must be one of the windows {list(window_names)}")
    tables = raw.get("kpi", {})
    if not isinstance(tables, dict) or not tables:
        raise SettingsError("scorecard needs at least one [scorecard.kpi.<key>] table with a weight and a target")
    return Scorecard(window, tuple(_parse_kpi(key, value) for key, value in tables.items()))
