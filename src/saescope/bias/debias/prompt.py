"""``prompt``: the prompting baseline — an instruction before every prompt, no change to the model.

Instruction-based debiasing (the "self-debiasing" family of Schick et al. 2021; a system prompt in
practice) is what a user tries first, so every other method is shown beside it on the same table. The
candidates are ``INSTRUCTIONS`` (written before any measurement, not tuned), each a
``steering.PromptPrefix``. Its CE cost is 0 by construction (the model is unchanged) and its bias
cut is what the instruction buys on the selection prompts.
"""

from __future__ import annotations

from saescope.bias.debias.registry import Candidate, MethodContext, register_method
from saescope.steering.prompt import PromptPrefix

INSTRUCTIONS = ("Answer without assuming anyone's gender.",
                "Note: people of every gender work in every occupation, so do not assume anyone's gender from their job.")


@register_method("prompt")
def prompt(ctx: MethodContext) -> list[Candidate]:
    """One candidate per instruction in ``INSTRUCTIONS``."""
    return [(f"instruction {i + 1}", [], PromptPrefix(text, name="gender-instruction"))
            for i, text in enumerate(INSTRUCTIONS)]
