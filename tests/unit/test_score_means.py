"""Team and floor score means (monitor/floorcache.py `_Mean`): kept from exact running sums as agents are scored
again, each mean is the correctly rounded mean of the scores it holds, whatever the order of adds and removes."""

from __future__ import annotations

import random
from fractions import Fraction

from monitor.floorcache import _Mean, _scaled


def _correctly_rounded_mean(scores: list[float]) -> float:
    return float(sum(map(Fraction, scores)) / len(scores))


def test_a_running_mean_is_the_correctly_rounded_mean_of_the_scores_it_holds() -> None:
    rng = random.Random(11)
    mean, held = _Mean(), []
    for _ in range(1500):
        if held and rng.random() < 0.4:  # an agent scored again: its old score leaves the mean
            gone = held.pop(rng.randrange(len(held)))
            mean.add(-_scaled(gone), -1)
        else:
            score = rng.choice([rng.uniform(0, 100), rng.random() * 1e-300, 5e-324, 0.0, 100.0, 1 / 3])
            held.append(score)
            mean.add(_scaled(score), 1)
        assert mean.value == (_correctly_rounded_mean(held) if held else None)


def test_a_scaled_score_is_the_floats_exact_value() -> None:
    for score in (0.0, 5e-324, 2.2250738585072014e-308, 1 / 3, 0.1, 99.99999999999999, 100.0, 1e300):
        assert Fraction(_scaled(score), 2**1074) == Fraction(score)
