"""``saescope contrast eval``: steering effect, fluency and side effects of the fitted vectors.

For every intervention in a ``contrast fit`` folder and every multiplier m:
- per held-out pair, the log-odds of the positive over the negative side: the two sides' common
  token prefix is the prompt, and log-odds = log P(positive span | prompt) - log P(negative span |
  prompt). For pairs of equal token length the span is only the distinguishing tokens (from the
  first to the last differing token, e.g. " she" vs " he"); otherwise it is the rest of each side;
  with ``*_completion`` fields, the completions are the spans;
  ``shift`` = log-odds(m) - log-odds(unsteered); ``intended`` = share of pairs whose shift has the
  sign of m (m > 0 should favour the positive side, m < 0 the negative one);
- on neutral held-out corpus text, the per-token KL(unsteered ‖ steered) and the perplexity.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from saescope.corpus import first_windows
from saescope.errors import SaescopeError
from saescope.model.hooks import applied
from saescope.model.likelihood import ce_and_kl, continuation_logprob
from saescope.model.loading import EMBEDDED_MODEL, LoadedModel
from saescope.reports import figure, save_png
from saescope.steering.base import Intervention, load_intervention
from saescope.steering.contrast.pairs import ContrastPair
from saescope.storage import read_json

VECTORS = ("caa", "sae_fit", "top_cluster")


def evaluate_contrast(lm: LoadedModel, folder: str | Path, pairs: list[ContrastPair], multipliers: list[float],
                      neutral_windows: int = 16, context: int = 64) -> pd.DataFrame:
    """One row per (vector, multiplier). Example::

        table = evaluate_contrast(lm, "contrast/gender", read_pairs("heldout.jsonl"), [-4, -2, 0, 2, 4])
    """
    folder = Path(folder)
    if not (folder / "report.json").exists():
        raise SaescopeError(f"{folder} is not a `contrast fit` folder (no report.json)")
    if not multipliers:
        raise SaescopeError("no multipliers given")
    neutral = first_windows(lm.tokenizer, neutral_windows * context, "heldout", context=context).to(lm.device)
    encoded = [_encode_pair(lm, pair) for pair in pairs]
    base_odds = _log_odds(lm, encoded, None)
    _, _, base_logp = ce_and_kl(lm, neutral)
    rows = []
    for name in VECTORS:
        if not (folder / f"{name}.json").exists():
            continue
        intervention = load_intervention(folder / f"{name}.json")
        for m in multipliers:
            steered = intervention.scaled(m)
            shift = _log_odds(lm, encoded, steered) - base_odds
            with steered.apply(lm):
                ce, kl, _ = ce_and_kl(lm, neutral, base_logp)
            rows.append({"vector": name, "multiplier": m, "mean_shift": float(shift.mean()),
                         "intended": float((np.sign(shift) == np.sign(m)).mean()) if m else float("nan"),
                         "kl_neutral": kl, "perplexity_neutral": math.exp(ce)})
    return pd.DataFrame(rows)


def _encode_pair(lm: LoadedModel, pair: ContrastPair) -> tuple[list[int], list[int], list[int]]:
    pos = lm.encode(pair.positive)
    neg = lm.encode(pair.negative)
    common = 0
    while common < min(len(pos), len(neg)) and pos[common] == neg[common]:
        common += 1
    prompt = pos[:common] or [lm.tokenizer.eos_token_id]
    if pair.positive_completion is not None and pair.negative_completion is not None:
        rest_pos = lm.encode(pair.positive_completion)
        rest_neg = lm.encode(pair.negative_completion)
    elif len(pos) == len(neg):  # score only the distinguishing span (e.g. " she" vs " he")
        last = max(i for i in range(len(pos)) if pos[i] != neg[i]) + 1
        rest_pos, rest_neg = pos[common:last], neg[common:last]
    else:
        rest_pos, rest_neg = pos[common:], neg[common:]
    if not rest_pos or not rest_neg:
        raise SaescopeError(f"pair {pair.positive!r} / {pair.negative!r}: the two sides are identical")
    return prompt, rest_pos, rest_neg


def _log_odds(lm: LoadedModel, encoded: list, intervention: Intervention | None) -> np.ndarray:
    with applied(intervention, lm):
        return np.array([continuation_logprob(lm, p, rp) - continuation_logprob(lm, p, rn) for p, rp, rn in encoded])


def best_multipliers(table: pd.DataFrame, max_kl: float = 0.1) -> pd.DataFrame:
    """Per vector: the multiplier with the highest ``intended`` share among those with KL <= ``max_kl``."""
    ok = table[(table.kl_neutral <= max_kl) & (table.multiplier != 0)]
    if ok.empty:
        return ok
    return ok.loc[ok.groupby("vector").intended.idxmax()].reset_index(drop=True)


def plot_contrast(table: pd.DataFrame, path: str | Path) -> Path:
    """Log-odds shift and neutral KL against the multiplier, one line per vector (PNG)."""
    fig, axes = figure(13, 3.4, ncols=3)
    for name, group in table.groupby("vector"):
        for ax, column in zip(axes, ("mean_shift", "intended", "kl_neutral")):
            ax.plot(group.multiplier, group[column], marker="o", label=name)
            ax.set_title(column)
            ax.set_xlabel("multiplier")
            ax.grid(alpha=0.3)
    axes[0].legend()
    axes[2].axhline(0.1, color="grey", linestyle="--", linewidth=1)
    return save_png(fig, path)


def fitted_model(folder: str | Path) -> str | None:
    """The model a ``contrast fit`` folder was made for (``None``: the embedded model, or unknown)."""
    for name in VECTORS:
        path = Path(folder) / f"{name}.json"
        if path.is_file():
            model = read_json(path, "intervention file").get("model")
            return None if model in (None, EMBEDDED_MODEL) else model
    return None
