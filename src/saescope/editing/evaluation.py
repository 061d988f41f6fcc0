"""Scores of an edit, after the ROME paper's CounterFact metrics, on prompts the user gives.

- ``efficacy``: on the edited prompt, the edited model prefers the target to the original answer
  (the plain model's top next token);
- ``paraphrase``: the share of other wordings (``"Sex of {}:"``) where it does too;
- ``specificity``: the share of neighbour subjects whose preference between the two is unchanged;
- ``p_target_before`` / ``p_target_after``; CE and KL on held-out text (``ce_increase`` relative).
Multi-token answers are scored by their whole log-probability.
"""

from __future__ import annotations

import torch

from saescope.corpus import first_windows
from saescope.editing.request import fill_subject
from saescope.editing.weight_edit import WeightEdit
from saescope.model.likelihood import ce_and_kl, continuation_logprob, span_logprobs
from saescope.model.loading import LoadedModel


def _target_margins(lm: LoadedModel, texts: list[str], target: str, original: str) -> list[float]:
    """log P(target | text) - log P(original | text) for every text, in one batched pass."""
    encode = lm.encode
    prompts = [encode(t) for t in texts]
    rows = [p + encode(answer) for answer in (target, original) for p in prompts]
    scored = span_logprobs(lm, rows, [len(p) for p in prompts] * 2)
    return (scored[:len(texts)] - scored[len(texts):]).tolist()


@torch.no_grad()
def edit_scores(lm: LoadedModel, edit: WeightEdit, paraphrases: list[str] | None = None,
                neighbours: list[str] | None = None, ce_tokens: int = 2048) -> dict[str, float | str]:
    """Efficacy, paraphrase, specificity, the target's probability and CE/KL side effects of ``edit``."""
    request = edit.request
    prompt_ids = torch.tensor([lm.encode(request.text)], device=lm.device)
    plain = lm.model(prompt_ids).logits[0, -1].float()
    original = lm.tokenizer.decode([int(plain.argmax())])
    target_ids = lm.encode(request.target)
    before = continuation_logprob(lm, prompt_ids[0].tolist(), target_ids)
    windows = first_windows(lm.tokenizer, ce_tokens, "heldout", "embedded", 128).to(lm.device)
    ce_before, _, clean_logp = ce_and_kl(lm, windows)
    neighbour_texts = [fill_subject(request.prompt, n) for n in neighbours or []]
    para_texts = [fill_subject(p, request.subject, "paraphrase") for p in paraphrases or []]
    plain_pref = [m > 0 for m in _target_margins(lm, neighbour_texts, request.target, original)] if neighbours else []
    with edit.apply(lm):
        after = continuation_logprob(lm, prompt_ids[0].tolist(), target_ids)
        margins = _target_margins(lm, [request.text, *para_texts, *neighbour_texts], request.target, original)
        ce_after, kl, _ = ce_and_kl(lm, windows, clean_logp)
    efficacy = margins[0] > 0
    para = [m > 0 for m in margins[1:1 + len(para_texts)]]
    kept = [(m > 0) == p for m, p in zip(margins[1 + len(para_texts):], plain_pref)]
    scores: dict[str, float | str] = {"original_answer": original, "efficacy": float(efficacy),
                                      "p_target_before": float(torch.tensor(before).exp()),
                                      "p_target_after": float(torch.tensor(after).exp()),
                                      "ce_increase": ce_after / ce_before - 1, "kl": kl}
    if para:
        scores["paraphrase"] = sum(para) / len(para)
    if kept:
        scores["specificity"] = sum(kept) / len(kept)
    return scores
