"""``PromptPrefix``: the prompting baseline — an instruction put before every text, as an intervention.

Self-debiasing by instruction ("Answer without assuming anyone's gender from their job.") changes
no weight and no activation: it changes the input. It is an ``Intervention`` so that the harness that
scores steering and edits (``bias eval --intervention``, ``debias``'s selection table) scores it the
same way: inside ``with PromptPrefix(text).apply(lm):`` every text that goes through the door of
scored texts, ``model.likelihood.encode_texts`` (next-token queries, sentence scores, activations),
is read after the instruction (after the document-start token where there is one), and ``generate``
puts it before each prompt (in the system turn of a chat). What bypasses those doors is unchanged:
token lookups and the CE/KL windows of corpus text (so its side effects on text are 0 by
construction, which is the truth: the model is the same). Saved as JSON like every intervention.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from saescope.errors import SaescopeError
from saescope.model.hooks import HookFn
from saescope.model.loading import LoadedModel
from saescope.steering.base import Intervention, register_intervention


@register_intervention()
class PromptPrefix(Intervention):
    """Every encoded text is read after ``text`` (a newline is added when it has none at its end)."""

    def __init__(self, text: str, name: str = "prompt") -> None:
        if not isinstance(text, str) or not text.strip():
            raise SaescopeError("the instruction is empty: give some text to put before the prompts")
        self.text = text if text.endswith(("\n", " ")) else text + "\n"
        self.name = name

    def hook_fns(self, lm: LoadedModel) -> list[tuple[str, HookFn]]:
        return []

    @property
    def position_wise(self) -> bool:
        return False  # it moves every position: packed rows would not see what separate prompts do

    @contextmanager
    def apply(self, lm: LoadedModel) -> Iterator[None]:
        """Active inside the block; the model's previous instruction is put back on exit."""
        self.check_model(lm)
        previous = lm.instruction
        lm.instruction = (previous or "") + self.text
        try:
            yield
        finally:
            lm.instruction = previous

    def to_dict(self) -> dict[str, Any]:
        return {"type": "PromptPrefix", "name": self.name, "text": self.text}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> PromptPrefix:
        return cls(str(data["text"]), str(data.get("name", "prompt")))
