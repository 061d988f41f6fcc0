"""Explaining and scoring through the Python API: failures recorded, resume asks only for what is missing,
scores follow the explanation, not the explainer."""

import shutil

import numpy as np
import pytest

from saescope.autointerp.client import Completion, LLMError
from saescope.autointerp.explain import ExplainConfig, explain_features, read_explanations
from saescope.autointerp.score import score_explanations, summarize
from saescope.features.run import FeatureRun


class ScriptedClient:
    """Answers explanation requests from a script (feature order), to test the bookkeeping around an LLM."""

    model = "scripted"

    def __init__(self, answers: list[str | None]) -> None:
        self.answers, self.asked = list(answers), 0

    def complete_many(self, requests):
        out = []
        for _ in requests:
            answer = self.answers[self.asked % len(self.answers)]
            self.asked += 1
            out.append(LLMError("time-out") if answer is None else Completion(answer, None, 5, 3))
        return out


@pytest.fixture()
def copy(run, tmp_path):
    shutil.copytree(run.path, tmp_path / "run")
    return FeatureRun.load(tmp_path / "run")


def test_failures_are_recorded_and_resume_asks_only_for_the_rest(copy, tmp_path):
    client = ScriptedClient(['{"explanation": "commas"}', "", None, "Explanation: names"])
    rows = explain_features(copy, [0, 1, 2, 3], client, ExplainConfig(chunk=2), progress=False)
    assert list(rows.explanation) == ["commas", "", "", "names"]
    assert "no explanation" in rows.error[1] and "time-out" in rows.error[2] and rows.raw[1] == ""
    again = explain_features(copy, [0, 1, 2, 3, 4, 5], client, ExplainConfig(chunk=2), resume=True, progress=False)
    assert client.asked == 6 and len(again) == 6 and len(read_explanations(copy)) == 6
    explain_features(copy, [0, 1], None, progress=False)  # the baseline's rows live beside the LLM's
    assert set(read_explanations(copy).explainer) == {"llm", "top_tokens"}


def test_an_explanation_naming_the_activating_words_beats_its_shuffled_control(copy):
    explain_features(copy, list(range(12)), None, progress=False)
    summary = summarize(score_explanations(copy, ["embedding"], None, progress=False))
    real = summary[(summary.explainer == "top_tokens") & (summary.control == "none")]
    control = summary[(summary.explainer == "top_tokens") & (summary.control == "shuffled")]
    assert real["mean"].iloc[0] > control["mean"].iloc[0]
    assert np.isfinite(real.ci_low.iloc[0]) and real.ci_low.iloc[0] <= real["mean"].iloc[0] <= real.ci_high.iloc[0]


def test_llm_scorers_need_a_client(copy):
    explain_features(copy, [0, 1], None, progress=False)
    with pytest.raises(Exception, match="needs an LLM client"):
        score_explanations(copy, ["detection"], None, progress=False)
