"""Contrastive steering from prompt pairs: CAA vector, SAE features that carry the difference,
clusters of them, and a sparse fit of the difference by SAE decoder directions.

Positions (the choice for pairs that tokenize differently): a pair whose two sides have the same
number of tokens is compared position by position, from the first token where they differ to the
end (the concept is written there and carried forward). A pair whose sides differ in length cannot
be aligned position by position, so it is compared by each side's mean over its tokens. Either way
each pair gives one activation delta (positive - negative); attention sinks are excluded (each side is
read after the document-start token, so none of its own tokens is the sink at position 0).

Features: per pair, the same delta of every SAE feature's activation; a paired t-test across pairs
(``scipy.stats.ttest_1samp`` on the deltas), effect size Cohen's d_z = mean / std of the deltas,
Benjamini-Hochberg correction (``scipy.stats.false_discovery_control``). Clusters: agglomerative
clustering (scikit-learn, average linkage) on 1 - (|decoder cosine| + co-activation correlation)/2.
Sparse fit: orthogonal matching pursuit (scikit-learn) of the CAA vector by unit decoder directions,
coefficients signed; R² = 1 - ‖caa - fit‖² / ‖caa‖² (uncentred: the vector's own size is the variance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats
import torch
from torch import Tensor

from saescope.activations.text import text_activations
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.steering.contrast.pairs import ContrastPair


@dataclass
class PairActivations:
    """Per pair: one residual delta and one feature delta, and per-position delta norms."""

    deltas: Tensor  # [n_pairs, d_model]
    feature_deltas: Tensor  # [n_pairs, d_sae]
    position_norms: dict[int, list[float]]  # offset from the first differing token -> delta norms
    aligned: int  # pairs compared position by position
    residual_norm: float  # median residual norm at the hook
    token_feats: Tensor  # [n_tokens, d_sae] activations of every token (for co-activation)


@torch.no_grad()
def pair_activations(lm: LoadedModel, sae: SAE, hook: str, pairs: list[ContrastPair],
                     batch_size: int = 32) -> PairActivations:
    texts = [text for pair in pairs for text in (pair.positive, pair.negative)]
    ids = [torch.tensor(row) for row in lm.encode(texts, start=True)]  # position 0, the sink, is the start token
    read = text_activations(lm, hook, texts, read="tokens", batch_size=batch_size, start=True)
    device = next(sae.parameters()).device
    deltas, feature_deltas, token_feats, norms = [], [], [], []
    positions: dict[int, list[float]] = {}
    aligned = 0
    for index in range(len(pairs)):
        sides = []
        for side in (2 * index, 2 * index + 1):
            acts, keep = read[side]
            acts = acts.to(device)
            keep = keep.to(device)
            sides.append((ids[side].to(device), acts, sae.encode(acts), keep))
            token_feats.append(sides[-1][2][keep])
            norms.append(acts[keep].norm(dim=-1))
        (pos_ids, pos_acts, pos_f, pos_keep), (neg_ids, neg_acts, neg_f, neg_keep) = sides
        if len(pos_ids) == len(neg_ids):
            aligned += 1
            differs = (pos_ids != neg_ids).nonzero()
            start = int(differs[0]) if len(differs) else len(pos_ids) - 1
            chosen = torch.zeros_like(pos_keep)
            chosen[start:] = True
            chosen &= pos_keep & neg_keep
            if not chosen.any():
                chosen[-1] = True
            delta = pos_acts - neg_acts
            for offset, position in enumerate(range(start, len(pos_ids))):
                if pos_keep[position] and neg_keep[position]:  # attention sinks are not reported
                    positions.setdefault(offset, []).append(float(delta[position].norm()))
            deltas.append(delta[chosen].mean(0))
            feature_deltas.append((pos_f - neg_f)[chosen].mean(0))
        else:
            deltas.append(pos_acts[pos_keep].mean(0) - neg_acts[neg_keep].mean(0))
            feature_deltas.append(pos_f[pos_keep].mean(0) - neg_f[neg_keep].mean(0))
    return PairActivations(torch.stack(deltas).cpu(), torch.stack(feature_deltas).cpu(), positions, aligned,
                           float(torch.cat(norms).median()), torch.cat(token_feats).cpu())


def feature_tests(feature_deltas: Tensor, alpha: float = 0.05) -> pd.DataFrame:
    """One row per feature: mean delta, Cohen's d_z, t, p, BH q, significant; sorted by |d_z|."""
    deltas = feature_deltas.double().numpy()
    mean, std = deltas.mean(0), deltas.std(0, ddof=1)
    moving = std > 0
    t = np.zeros(deltas.shape[1])
    p = np.ones(deltas.shape[1])
    t[moving], p[moving] = scipy.stats.ttest_1samp(deltas[:, moving], 0.0, axis=0)
    q = scipy.stats.false_discovery_control(p)
    dz = np.divide(mean, std, out=np.zeros_like(mean), where=moving)
    table = pd.DataFrame({"feature": np.arange(deltas.shape[1]), "mean_delta": mean, "cohens_dz": dz, "t": t,
                          "p": p, "q": q, "significant": (q < alpha) & moving})
    return table.reindex(table.cohens_dz.abs().sort_values(ascending=False).index).reset_index(drop=True)


def cluster_features(sae: SAE, features: list[int], token_feats: Tensor, distance_threshold: float = 0.8) -> list[int]:
    """Cluster labels for ``features`` by decoder cosine and co-activation (see module docstring)."""
    from sklearn.cluster import AgglomerativeClustering

    if len(features) < 2:
        return [0] * len(features)
    directions = sae.decoder_directions()[features].detach().cpu().double()
    cosine = (directions @ directions.T).abs().numpy()
    acts = token_feats[:, features].double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        coact = np.nan_to_num(np.corrcoef(acts, rowvar=False), nan=0.0)
    distance = np.clip(1 - (cosine + coact) / 2, 0, None)
    np.fill_diagonal(distance, 0)
    model = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                    distance_threshold=distance_threshold)
    return model.fit_predict(distance).tolist()


def sparse_fit(sae: SAE, target: Tensor, max_features: int = 64) -> tuple[list[dict], Tensor]:
    """OMP path of ``target`` [d_in] by unit decoder directions: the R² curve (one row per step) and the
    coefficients of every step ``[d_sae, steps]``."""
    from sklearn.linear_model import orthogonal_mp

    X = sae.decoder_directions().detach().cpu().double().numpy().T  # [d_in, d_sae]
    y = target.double().numpy()
    path = orthogonal_mp(X, y, n_nonzero_coefs=max_features, return_path=True)  # [d_sae, steps]
    path = path.reshape(X.shape[1], -1)
    curve = []
    for step in range(path.shape[1]):
        fit = X @ path[:, step]
        r2 = 1 - float(((y - fit) ** 2).sum() / (y**2).sum())
        cosine = float(fit @ y / (np.linalg.norm(fit) * np.linalg.norm(y) + 1e-12))
        curve.append({"n_features": int((path[:, step] != 0).sum()), "r2": r2, "cosine_to_caa": cosine})
    return curve, torch.from_numpy(path).float()


def least_squares_on(sae: SAE, target: Tensor, features: list[int]) -> Tensor:
    """Coefficients [len(features)] of the best fit of ``target`` by those unit decoder directions."""
    X = sae.decoder_directions().detach().cpu().double()[features].T  # [d_in, m]
    solution = torch.linalg.lstsq(X, target.double()[:, None]).solution[:, 0]
    return solution.float()
