"""Explaining and scoring through the Python API: failures recorded, resume asks only for what is missing,
scores follow the explanation, not the explainer."""

import shutil

import numpy as np
import pytest

from saescope.autointerp.explain import ExplainConfig, explain_features, read_explanations
from saescope.autointerp.llm.protocol import Completion, LLMError
from saescope.autointerp.score_run import score_explanations, summarize
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
    from saescope.autointerp.score_run import read_scores
    from saescope.features.explanations import explanation_label

    rows = read_scores(copy)
    rows = rows[(rows.control == "none") & rows.score_low.notna()]
    assert len(rows) >= 6  # each feature's own interval, around its own score
    assert (rows.score_low <= rows.score + 1e-9).all() and (rows.score <= rows.score_high + 1e-9).all()
    assert (rows.score_high - rows.score_low).between(0, 1).all() and (rows.score_high > rows.score_low).any()
    row = rows.iloc[0]
    label = explanation_label(copy.explanations()[int(row.feature)])
    assert label.endswith(f"(embedding {row.score:.2f} [{row.score_low:.2f}, {row.score_high:.2f}])")


def test_llm_scorers_need_a_client(copy):
    explain_features(copy, [0, 1], None, progress=False)
    with pytest.raises(Exception, match="needs an LLM client"):
        score_explanations(copy, ["detection"], None, progress=False)


def test_simulation_and_intervention_scorers_run_with_the_embedded_model(copy, lm, small_sae):
    from saescope.autointerp.intervention import steered_texts
    from saescope.autointerp.llm.local import LocalChatClient

    explain_features(copy, [0, 1], None, progress=False)
    rows = score_explanations(copy, ["simulation", "intervention"], LocalChatClient(lm), max_contexts=2, controls=False,
                              progress=False, subject=(lm, small_sae))
    assert len(rows) == 4 and set(rows.scorer) == {"simulation", "intervention"}
    simulated = rows[rows.scorer == "simulation"]
    from saescope.autointerp.examples import scoring_contexts
    from saescope.features.samples import load_samples

    samples = load_samples(copy)
    for row in simulated.itertuples():  # every picked context was asked once: answered or counted as failed
        pos, neg = scoring_contexts(samples, row.feature)
        assert row.n_pos + row.n_neg + row.failed == min(2, len(pos)) + min(2, len(neg))
    assert simulated.score.dropna().between(-1, 1).all()
    assert rows[rows.scorer == "intervention"].score.between(0, 1).all()
    plain, steered = steered_texts(lm, small_sae, copy, [0], strength=50.0)
    assert len(plain) == len(steered[0]) == 3 and steered[0] != plain  # a strong push changes the text


def test_expected_digit_reads_logprobs_then_text():
    import math

    from saescope.autointerp.llm.protocol import expected_digit

    assert expected_digit(Completion("7", {"7": math.log(0.5), "3": math.log(0.5), "x": -1.0})) == pytest.approx(5.0)
    assert expected_digit(Completion("I'd say 4")) == 4.0 and expected_digit(Completion("none")) is None


def test_circuit_nodes_are_labelled_with_the_llm_explanation_when_the_run_has_one(copy, lm):
    from saescope.circuits.graph import Circuit, Node
    from saescope.circuits.plot import LABEL_CHARS, node_labels

    hook = "blocks.2.hook_resid_post"
    nodes = [Node(hook, 0, None, 1.0), Node(hook, 1, None, 0.5), Node(hook, 2, None, 0.2), Node(hook, -1, None, 0.1)]
    circuit = Circuit([hook], nodes, [], {"method": "atp", "aggregation": "sum"}, data={"pairs": "t", "n_pairs": 1})
    explain_features(copy, [0, 1], None, progress=False)  # top-token baseline for 0 and 1
    long = "the word 'the' at the start of a sentence in news text"
    explain_features(copy, [1], ScriptedClient([f'{{"explanation": "{long}"}}']), progress=False)
    labels = node_labels(lm, {}, circuit, {hook: copy})
    baseline = read_explanations(copy).set_index(["feature", "explainer"]).explanation[(0, "top_tokens")]
    assert labels[f"{hook}/0"]["explanation"] == baseline and baseline[:10] in labels[f"{hook}/0"]["label"]
    assert labels[f"{hook}/1"]["explanation"] == long  # the LLM's, not the baseline's
    assert labels[f"{hook}/1"]["label"].split("\n")[1] == long[:LABEL_CHARS - 1].rstrip() + "…"
    assert labels[f"{hook}/2"]["explanation"] == "" and labels[f"{hook}/err"]["explanation"] == ""
