"""95 % Wilson intervals of the twin benchmarks' shares (bias.benchmarks.preference_interval)."""

import math

import pytest

from saescope.bias.benchmarks import OccupationScores, TwinScores, preference_interval, twin_preference
from saescope.bias.data import TwinPair
from saescope.bias.evaluation import BiasEvaluation, BiasScores


def _wilson(k: int, n: int, z: float = 1.959964) -> list[float]:
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [centre - half, centre + half]


@pytest.mark.parametrize(("k", "n"), [(5, 10), (69, 127), (224, 396), (0, 20), (20, 20)])
def test_the_interval_is_wilsons(k, n):
    assert preference_interval(k, n) == pytest.approx(_wilson(k, n), abs=1e-6)
    low, high = preference_interval(k, n)
    assert 0 <= low <= k / n <= high <= 1


def test_known_widths_of_the_shipped_benchmarks():
    crows, wino = preference_interval(64, 127), preference_interval(198, 396)
    assert crows[1] - crows[0] == pytest.approx(0.17, abs=0.01)  # about ±9 points: the docstring's figure
    assert wino[1] - wino[0] == pytest.approx(0.098, abs=0.005)


def test_twin_preference_keeps_each_groups_interval(lm):
    pairs = [TwinPair("The cat sat on the mat.", "The cat sat on the mat mat.", "a"),
             TwinPair("She went home.", "She went went home.", "a"),
             TwinPair("Dogs bark.", "Dogs barks bark.", "b")]
    scores = twin_preference(lm, pairs)
    for group in ("a", "b", "all"):
        wins = round(scores.preference[group] * scores.n[group])
        assert scores.interval[group] == pytest.approx(preference_interval(wins, scores.n[group]))


def _scores(winobias: TwinScores, crows: TwinScores) -> BiasScores:
    occupations = OccupationScores(0.5, 0.5, 0.1, 0.1, 0.5, {"nurse": 0.9}, {"nurse": 90.0})
    return BiasScores(occupations, winobias, crows, 0.97, 0.9, 3.4)


def test_the_evaluation_reports_the_intervened_models_intervals():
    twins = TwinScores({"type1": 0.6, "type2": 0.5}, {"type1": 0.1, "type2": 0.0}, {"type1": 10, "type2": 10},
                       {"type1": preference_interval(6, 10), "type2": preference_interval(5, 10)})
    crows = TwinScores({"gender": 0.5}, {"gender": 0.0}, {"gender": 10}, {"gender": preference_interval(5, 10)})
    old = TwinScores({"type1": 0.6}, {"type1": 0.1}, {"type1": 10})  # cached before intervals were kept
    result = BiasEvaluation("m", _scores(old, old), _scores(twins, crows))
    expected = {"winobias_type1": preference_interval(6, 10), "winobias_type2": preference_interval(5, 10),
                "crows_gender": preference_interval(5, 10)}
    assert result.intervals == expected and result.to_dict()["intervals"] == expected
    again = BiasEvaluation.from_dict(result.to_dict())
    assert again.intervals == expected
    assert BiasEvaluation("m", _scores(old, old), _scores(old, old)).intervals == {}
    assert BiasEvaluation("m", _scores(twins, crows)).intervals == {}
