"""SAEBench's ``absorption`` eval (Chanin et al. 2024, "A is for Absorption"): the first-letter task.

1. **Words.** Single-token vocabulary words with a leading space, lower-case ASCII letters, three or
   more characters; up to ``words_per_letter`` per first letter (seeded), letters with fewer than 12
   words left out; 70 % train, 30 % test, stratified by letter.
2. **Prompt.** SAEBench's template ``{word} has the first letter:`` after a few in-context examples
   (``cat has the first letter: C``), activations read at the word's token.
3. **Probe.** A multinomial logistic regression on the residual at the SAE's hook (train words); the
   probe direction of a letter is its row over the scaler's deviations, made unit-norm.
4. **Main latents.** For each letter, latents ranked by the difference of class means on the train
   words; the k-sparse probe on the top k (k = 1 … ``max_k``) is fitted and its F1 read on the test
   words; latents are added while F1 rises by at least ``f1_jump`` (0.03) — the *split* latents.
5. **Absorption**, per test word the probe classifies correctly (SAEBench's calculator):
   - ``absorption_fraction``: the share of the probe projection carried by up to 3 other latents whose
     decoder cosine with the probe is ≥ 0.1, when the main latents fall short and those latents cover at
     least 40 % of the projection (0 when the main latents cover it, 1 when they do not fire);
   - ``is_full_absorption``: no main latent fires, the top projecting latent has probe cosine ≥ 0.025
     and carries ≥ 40 % of the projection.
   Metrics (category ``mean``): mean and standard deviation over letters of the absorption fraction, the
   full-absorption rate and the number of split latents.

SAEBench's warning holds here too: **the eval is not meaningful below about 1B parameters or 16k
latents**; on the embedded 135M model the probe is weak and the figures are for comparing SAEs only.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np
import torch

from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE

WARNING = ("absorption: SAEBench warns that this eval is not meaningful below about 1B parameters or 16k latents; "
           "read it as a comparison between SAEs on the same model")
TEMPLATE = "{word} has the first letter:"
EXAMPLES = (" cat", " river", " moon", " paper", " glass")
FULL_COS, FRACTION_COS, PROJECTION_SHARE, MAX_ABSORBERS, EPS = 0.025, 0.1, 0.4, 3, 1e-8


def vocabulary_words(lm: LoadedModel, words_per_letter: int, seed: int = 0) -> list[str]:
    """Single-token words (leading space, lower-case letters, ≥ 3 characters), up to ``words_per_letter``
    per first letter, letters with fewer than 12 left out."""
    tokenizer: Any = lm.tokenizer
    decoded = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    by_letter: dict[str, list[str]] = {}
    for token in decoded:
        word = token[1:]
        if token.startswith(" ") and len(word) >= 3 and all(c in string.ascii_lowercase for c in word) \
                and token not in EXAMPLES:
            by_letter.setdefault(word[0], []).append(token)
    rng = np.random.default_rng(seed)
    words = []
    for letter in sorted(by_letter):
        found = sorted(set(by_letter[letter]))
        if len(found) >= 12:
            words += [found[i] for i in sorted(rng.permutation(len(found))[:words_per_letter])]
    return words


def prompt_texts(words: list[str]) -> list[str]:
    """The prompts: the in-context examples, then the template on each word."""
    lead = "\n".join(TEMPLATE.format(word=e) + " " + e.strip()[0].upper() for e in EXAMPLES) + "\n"
    return [lead + TEMPLATE.format(word=w) for w in words]


def absorption_eval(lm: LoadedModel, sae: SAE, words_per_letter: int = 100, max_k: int = 10, f1_jump: float = 0.03,
                    seed: int = 0) -> tuple[dict, list, dict]:
    """``(metrics, details, unstructured)`` of the absorption eval."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from saescope.activations.text import text_activations

    if max_k > sae.d_sae:
        raise SaescopeError(f"max_k={max_k} is larger than the SAE's {sae.d_sae} latents")
    hook = lm.check_sae(sae)
    words = vocabulary_words(lm, words_per_letter, seed)
    suffix = len(lm.encode(TEMPLATE.format(word="")))  # the tokens after the word
    texts = prompt_texts(words)
    x = text_activations(lm, hook, texts, read=[-(suffix + 1)] * len(texts)).double()
    with torch.no_grad():
        f = sae.encode(x.to(sae.W_enc.device, sae.W_enc.dtype)).double().cpu()
    letters = np.array([w.strip()[0] for w in words])
    train, test = train_test_split(np.arange(len(words)), test_size=0.3, stratify=letters, random_state=seed)
    scaler = StandardScaler().fit(x[train].numpy())
    probe = LogisticRegression(max_iter=3000).fit(scaler.transform(x[train].numpy()), letters[train])
    predicted = probe.predict(scaler.transform(x[test].numpy()))
    W_dec = sae.W_dec.detach().double().cpu()
    unit_dec = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    details = []
    for row, letter in enumerate(probe.classes_):
        direction = torch.from_numpy(probe.coef_[row] / scaler.scale_)
        direction = direction / direction.norm()
        y_train, y_test = letters[train] == letter, letters[test] == letter
        main = _split_latents(f[train].numpy(), y_train, f[test].numpy(), y_test, max_k, f1_jump, f1_score)
        cos = unit_dec @ direction
        positives = [i for i, j in enumerate(test) if letters[j] == letter and predicted[i] == letter]
        fractions, full = [], 0
        for i in positives:
            acts = f[test[i]]
            fraction, is_full = _absorption(float(x[test[i]] @ direction), acts, acts * cos, cos, main)
            fractions.append(fraction)
            full += is_full
        tp = len(positives)
        details.append({"first_letter": letter, "mean_absorption_fraction": float(np.sum(fractions) / tp) if tp else 0.0,
                        "full_absorption_rate": full / tp if tp else 0.0, "num_full_absorption": full,
                        "num_probe_true_positives": tp, "num_split_features": len(main), "split_features": main})
    table = {key: [d[key] for d in details] for key in ("mean_absorption_fraction", "full_absorption_rate",
                                                        "num_split_features")}
    metrics = {"mean": {"mean_absorption_fraction_score": float(np.mean(table["mean_absorption_fraction"])),
                        "mean_full_absorption_score": float(np.mean(table["full_absorption_rate"])),
                        "mean_num_split_features": float(np.mean(table["num_split_features"])),
                        "std_dev_absorption_fraction_score": float(np.std(table["mean_absorption_fraction"], ddof=1)),
                        "std_dev_full_absorption_score": float(np.std(table["full_absorption_rate"], ddof=1)),
                        "std_dev_num_split_features": float(np.std(table["num_split_features"], ddof=1))}}
    unstructured = {"warning": WARNING, "words": len(words), "letters": len(details),
                    "probe_test_accuracy": float(np.mean(predicted == letters[test]))}
    return metrics, details, unstructured


def _split_latents(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray, max_k: int,
                   f1_jump: float, f1_score: Any) -> list[int]:
    """The latents of the k-sparse probe, grown while test F1 rises by ``f1_jump`` or more."""
    from sklearn.linear_model import LogisticRegression

    order = np.argsort(-(f_train[y_train].mean(0) - f_train[~y_train].mean(0)), kind="stable")[:max_k]
    chosen, best = [int(order[0])], -1.0
    for k in range(1, max_k + 1):
        columns = order[:k]
        model = LogisticRegression(max_iter=2000, class_weight="balanced").fit(f_train[:, columns], y_train)
        score = float(f1_score(y_test, model.predict(f_test[:, columns]), zero_division=0))
        if k == 1:
            best = score
            continue
        if score - best < f1_jump:
            break
        chosen, best = [int(c) for c in columns], score
    return chosen


def _absorption(projection: float, acts: torch.Tensor, projections: torch.Tensor, cos: torch.Tensor,
                main: list[int]) -> tuple[float, bool]:
    """SAEBench's absorption fraction and full-absorption verdict for one word."""
    main_projection = float(projections[main].sum())
    candidates = torch.ones(len(acts), dtype=torch.bool)
    candidates[main] = False
    candidates &= (cos >= FRACTION_COS) & (projections > 0)
    absorbers = float(projections[candidates].topk(min(MAX_ABSORBERS, int(candidates.sum()))).values.sum())
    if projection <= 0 or main_projection >= projection or absorbers / projection < PROJECTION_SHARE:
        fraction = 0.0
    elif main_projection <= 0:
        fraction = 1.0
    else:
        absorbed = min(absorbers, projection - main_projection)
        fraction = float(np.clip(absorbed / (absorbed + main_projection), 0.0, 1.0))
    top = int(projections.argmax())
    full = projection > 0 and bool((acts[main].abs() < EPS).all()) and float(cos[top]) >= FULL_COS \
        and float(projections[top]) / projection >= PROJECTION_SHARE
    return fraction, full
