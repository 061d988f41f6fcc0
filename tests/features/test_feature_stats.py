"""Streaming feature statistics equal scipy/numpy and a brute-force sort on the same activations."""

import numpy as np
import pytest
import scipy.stats
import torch

from saescope.features.accumulator import DEAD_LOG10_DENSITY, FeatureAccumulator


def _batches(seed=0, n_batches=5, batch=3, seq=16, d_sae=12, vocab=50):
    g = torch.Generator().manual_seed(seed)
    for i in range(n_batches):
        feats = torch.rand(batch, seq, d_sae, generator=g) * 5
        feats *= torch.rand(batch, seq, d_sae, generator=g) < 0.3  # sparse
        feats[..., -1] = 0.0  # a dead feature
        ids = torch.randint(0, vocab, (batch, seq), generator=g)
        sources = torch.stack([torch.full((batch, seq), i), torch.arange(seq).expand(batch, seq)], -1)
        keep = torch.ones(batch, seq, dtype=torch.bool)
        keep[:, 0] = False
        yield feats, ids, sources, keep


@pytest.mark.parametrize("n_batches, vocab", [(5, 50), (20, 6)], ids=["many-tokens", "few-tokens-repeated"])
def test_streaming_statistics_equal_scipy_and_brute_force(n_batches, vocab):
    acc = FeatureAccumulator(d_sae=12, vocab_size=vocab, top_k=4, context_left=2, context_right=1, top_tokens=3)
    all_kept, all_ids, everything = [], [], []
    for w, (feats, ids, sources, keep) in enumerate(_batches(n_batches=n_batches, vocab=vocab)):
        acc.update(feats, ids, sources, keep, first_window=w * 3)
        all_kept.append(feats[keep])
        all_ids.append(ids[keep])
        everything.append((feats * keep[..., None], ids, w * 3))
    acts = torch.cat(all_kept).double().numpy()  # [n, d_sae]
    stats = {k: v.numpy() for k, v in acc.stats().items()}
    live = slice(0, 11)
    np.testing.assert_allclose(stats["mean"], acts.mean(0), rtol=1e-10)
    np.testing.assert_allclose(stats["std"], acts.std(0), rtol=1e-8)
    np.testing.assert_allclose(stats["skewness"][live], scipy.stats.skew(acts[:, live]), rtol=1e-6)
    np.testing.assert_allclose(stats["kurtosis"][live], scipy.stats.kurtosis(acts[:, live]), rtol=1e-6)
    np.testing.assert_array_equal(stats["count"], (acts > 0).sum(0))
    np.testing.assert_allclose(stats["max"], acts.max(0), rtol=1e-6)
    assert stats["log10_density"][-1] == DEAD_LOG10_DENSITY and np.isnan(stats["kurtosis"][-1])
    assert int(acc.state["hist"].sum()) == int((acts > 0).sum())
    # top-k examples: brute-force sort over every (window, position)
    for feature in range(11):
        candidates = []
        for feats, _ids, first in everything:
            for b in range(feats.shape[0]):
                for t in range(feats.shape[1]):
                    candidates.append((float(feats[b, t, feature]), first + b, t))
        best = sorted(candidates, reverse=True)[:4]
        top = acc.sorted_top_examples()
        np.testing.assert_allclose(top["top_values"][feature].numpy(), [c[0] for c in best], rtol=1e-6)
        assert top["top_location"][feature].tolist() == [[c[1], c[2]] for c in best]
    # every context holds the feature's activations around the example (offsets -2..1), 0 off the window
    top = acc.sorted_top_examples()
    for feature in range(11):
        for slot in range(4):
            window, t = top["top_location"][feature, slot].tolist()
            feats = everything[window // 3][0][window % 3]  # [seq, d_sae], zero at the sinks
            expected = [float(feats[t + o, feature]) if 0 <= t + o < feats.shape[0] else 0.0 for o in (-2, -1, 0, 1)]
            np.testing.assert_allclose(top["top_context_acts"][feature, slot].numpy(), expected, rtol=1e-6)
    # top tokens: best 3 distinct tokens by max activation
    ids_all = torch.cat(all_ids).numpy()
    features, tokens, maxes = acc.top_tokens()
    for feature in range(11):
        per_token = {}
        for tok, a in zip(ids_all, acts[:, feature]):
            if a > 0:
                per_token[tok] = max(per_token.get(tok, 0.0), a)
        best = sorted(per_token.items(), key=lambda kv: -kv[1])[:3]
        mine = features == feature
        assert tokens[mine].tolist() == [tok for tok, _ in best]
        np.testing.assert_allclose(maxes[mine].numpy(), [m for _, m in best], rtol=1e-6)


def test_state_round_trip_gives_identical_results():
    first = FeatureAccumulator(d_sae=12, vocab_size=50, top_k=4)
    batches = list(_batches(seed=1))
    for w, batch in enumerate(batches):
        first.update(*batch, first_window=w)
    second = FeatureAccumulator(d_sae=12, vocab_size=50, top_k=4)
    for w, batch in enumerate(batches[:2]):
        second.update(*batch, first_window=w)
    resumed = FeatureAccumulator(d_sae=12, vocab_size=50, top_k=4)
    resumed.load_state_dict(second.state_dict())
    for w, batch in enumerate(batches[2:], start=2):
        resumed.update(*batch, first_window=w)
    expected, got = first.state_dict(), resumed.state_dict()
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key


def test_sparse_entries_give_the_same_state_as_dense_activations():
    dense, sparse = (FeatureAccumulator(d_sae=12, vocab_size=50, top_k=4, top_tokens=3) for _ in range(2))
    for w, (feats, ids, sources, keep) in enumerate(_batches(seed=2, n_batches=8)):
        dense.update(feats.clone(), ids, sources, keep, first_window=w)
        flat = feats.reshape(-1, 12)
        rows, cols = flat.nonzero(as_tuple=True)
        sparse.update_sparse(rows, cols, flat[rows, cols], ids, sources, keep, first_window=w)
    expected, got = dense.state_dict(), sparse.state_dict()
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key


def test_sae_encode_sparse_matches_dense_encode():
    from saescope.sae.core import SAE, SAEConfig

    torch.manual_seed(0)
    for activation in ("topk", "relu"):
        sae = SAE(SAEConfig(16, 64, activation, k=4 if activation == "topk" else None))
        x = torch.randn(10, 16)
        rows, cols, values = sae.encode_sparse(x)
        rebuilt = torch.zeros(10, 64)
        rebuilt[rows, cols] = values
        torch.testing.assert_close(rebuilt, sae.encode(x))


def test_out_of_range_entries_are_refused():
    from saescope.errors import SaescopeError

    acc = FeatureAccumulator(d_sae=12, vocab_size=50)
    feats, ids, sources, keep = next(_batches())
    with pytest.raises(SaescopeError, match="out of range"):
        acc.update_sparse(torch.tensor([0]), torch.tensor([12]), torch.tensor([1.0]), ids, sources, keep, 0)
