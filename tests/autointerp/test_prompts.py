"""What the LLM reads and how its answers are read: marks, parsing, Yes/No margins, shuffled controls."""

import math
import random

import pytest

from saescope.autointerp.examples import Context
from saescope.autointerp.llm.protocol import Completion, yes_no_margin
from saescope.autointerp.prompts import parse_explanation
from saescope.autointerp.score_run import shuffled


def test_marks_wrap_the_firing_tokens_and_merge_neighbours():
    context = Context([" The", " nurse", " said", " that", " she", "\n", "left"], [0, 1.0, 0, 0, 2.0, 0.5, 0], 2.0, 2)
    assert context.marked() == "The <<nurse>> said that <<she >>left"
    assert context.plain() == "The nurse said that she left"
    assert context.marked([True, False, False, False, False, False, True]) == "<<The>> nurse said that she <<left>>"


def test_misplaced_marks_avoid_firing_tokens_and_keep_the_count():
    context = Context(list("abcdefgh"), [0, 1, 0, 2, 0, 0, 0, 3], 3.0, 1)
    for seed in range(20):
        marks = context.misplaced_marks(random.Random(seed))
        assert sum(marks) == 3 and not any(m and a > 0 for m, a in zip(marks, context.acts))


@pytest.mark.parametrize(("answer", "expected"), [
    ('{"explanation": "female pronouns"}', "female pronouns"),
    ('Sure! {"explanation": "the word <<she>>"} Hope this helps', "the word she"),
    ('{"explanation": "dates and years', "dates and years"),  # cut off by max_tokens
    ("Explanation: names of cities\nmore text", "names of cities"),
    ("  verbs in the past tense  ", "verbs in the past tense"),
])
def test_explanations_are_parsed(answer, expected):
    assert parse_explanation(answer) == expected


@pytest.mark.parametrize("answer", ["", "   ", "{}", "12345", "x" * 300])
def test_answers_without_an_explanation_are_failures(answer):
    with pytest.raises(ValueError):
        parse_explanation(answer)


def test_yes_no_margin_reads_logprobs_then_text():
    assert yes_no_margin(Completion("Yes", {"Yes": math.log(0.6), " yes": math.log(0.2), "No": math.log(0.2)})) == \
        pytest.approx(math.log(0.8 / 0.2))
    assert yes_no_margin(Completion("No", {"No": -0.1, "Maybe": -3.0})) == pytest.approx(-4.0 + 0.1)  # yes below the list
    assert yes_no_margin(Completion("yes, it is")) == math.inf
    assert yes_no_margin(Completion("No.")) == -math.inf
    assert yes_no_margin(Completion("perhaps")) is None


def test_shuffled_explanations_never_keep_their_own():
    given = {i: f"explanation {i}" for i in range(30)}
    for seed in range(5):
        other = shuffled(given, seed)
        assert sorted(other.values()) == sorted(given.values())
        assert all(other[f] != given[f] for f in given)
