"""The prompts, versioned (``PROMPT_VERSION`` is stored with every explanation and score).

After delphi's explainer and detection/fuzzing scorers, shortened so that a 135M-parameter chat model
can follow them too. Few-shot examples were tried and dropped: the embedded 135M model copied the
examples' answers ("female pronouns") onto unrelated features, which is worse than no answer. The
explainer is asked for JSON; ``parse_explanation`` also accepts an
``Explanation: ...`` line or a bare short sentence, and records a failure for anything else.
"""

from __future__ import annotations

import json
import re

from saescope.autointerp.examples import CLOSE, OPEN, Context, clean
from saescope.autointerp.llm.protocol import ChatRequest

PROMPT_VERSION = "1"
MAX_EXPLANATION_CHARS = 200

EXPLAIN_SYSTEM = (
    f"You explain features of a language model. In each text, the words where the feature is active are marked "
    f"{OPEN}like this{CLOSE}. Say in a few words what the marked words have in common (a word, a topic, a "
    'grammatical role). Answer in JSON: {"explanation": "..."}')

DETECTION_SYSTEM = ("A language model feature is described by an explanation. Decide if the feature is active "
                    "somewhere in the text. Answer Yes or No.")

FUZZING_SYSTEM = (f"A language model feature is described by an explanation. In the text, some words are marked "
                  f"{OPEN}like this{CLOSE}. Decide if the explanation describes the marked words. Answer Yes or No.")


def explain_request(contexts: list[Context], promoted: list[str], max_tokens: int = 16) -> ChatRequest:
    lines = [f"{i + 1}. {c.marked()}" for i, c in enumerate(contexts)]
    user = "Texts:\n" + "\n".join(lines)
    if promoted:
        user += "\nWhen active, the feature makes the model more likely to write: " + ", ".join(promoted) + "."
    return ChatRequest((("system", EXPLAIN_SYSTEM), ("user", user)), max_tokens=max_tokens)


def detection_request(explanation: str, context: Context) -> ChatRequest:
    user = f"Explanation: {explanation}\nText: {context.plain()}\nIs the feature active in this text?"
    return ChatRequest((("system", DETECTION_SYSTEM), ("user", user)), max_tokens=1, top_logprobs=10)


def fuzzing_request(explanation: str, marked_text: str) -> ChatRequest:
    user = f"Explanation: {explanation}\nText: {marked_text}\nDoes the explanation describe the marked words?"
    return ChatRequest((("system", FUZZING_SYSTEM), ("user", user)), max_tokens=1, top_logprobs=10)


SIMULATION_SYSTEM = ("A language model feature is described by an explanation. Say how strongly the feature is "
                     "active on the given word of the text, from 0 (not at all) to 9 (as strongly as it gets). "
                     "Answer with one digit.")

INTERVENTION_SYSTEM = ("A language model feature is described by an explanation. Someone may have turned the feature "
                       "up while the model wrote the text. Decide if the text shows what the explanation describes. "
                       "Answer Yes or No.")


def simulation_request(explanation: str, context: Context) -> ChatRequest:
    word = context.tokens[context.center].strip() or repr(context.tokens[context.center])
    user = f"Explanation: {explanation}\nText: {context.plain()}\nWord: {word}\nHow strongly is the feature active on it?"
    return ChatRequest((("system", SIMULATION_SYSTEM), ("user", user)), max_tokens=1, top_logprobs=20)


def intervention_request(explanation: str, text: str) -> ChatRequest:
    user = f"Explanation: {explanation}\nText: {clean(text)}\nDoes the text show what the explanation describes?"
    return ChatRequest((("system", INTERVENTION_SYSTEM), ("user", user)), max_tokens=1, top_logprobs=10)


def parse_explanation(text: str) -> str:
    """The explanation in an explainer's answer; ``ValueError`` (the recorded failure) when there is none."""
    stripped = text.strip()
    match = re.search(r"\{.*?\}", stripped, re.S)
    if match:
        try:
            value = json.loads(match.group(0)).get("explanation")
        except (json.JSONDecodeError, AttributeError):
            value = None
        if isinstance(value, str):
            return _checked(value)
    match = re.search(r'"explanation"\s*:\s*"([^"\n]+)', stripped)  # JSON cut off by max_tokens
    if match:
        return _checked(match.group(1))
    match = re.search(r"explanation\s*:\s*(.+)", stripped, re.I)
    line = match.group(1) if match else (stripped.splitlines() or [""])[0]
    return _checked(line)


def _checked(value: str) -> str:
    value = value.strip().strip('"').strip()
    value = value.replace(OPEN, "").replace(CLOSE, "")
    if not value or not re.search(r"[A-Za-z]", value):
        raise ValueError("no explanation in the answer")
    if len(value) > MAX_EXPLANATION_CHARS:
        raise ValueError(f"the explanation is longer than {MAX_EXPLANATION_CHARS} characters")
    return value
