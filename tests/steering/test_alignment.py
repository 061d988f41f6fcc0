"""Alignment scoring: the arithmetic on a known answer, and an end-to-end run with real embeddings."""

import pytest
import torch

from saescope.embeddings import sentence_embeddings
from saescope.errors import SaescopeError
from saescope.sae.core import SAE, SAEConfig
from saescope.steering.ibm import AlignmentScores, score_features, scores_from_summaries


def test_scores_known_answer():
    summaries = torch.tensor([[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.5, 0.0]])
    scores, coverage = scores_from_summaries(summaries, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.0, 0.5, 0.0]))
    assert coverage == 0.75


def test_embeddings_put_paraphrases_closer_than_unrelated_text():
    emb = sentence_embeddings(["The cat sat on the mat.", "A cat was sitting on a mat.", "Stock prices fell sharply."])
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3


def test_score_features_end_to_end_and_file_checks(lm, tmp_path):
    torch.manual_seed(0)
    sae = SAE(SAEConfig(576, 128, "topk", k=8, hook_name="blocks.4.hook_resid_post")).requires_grad_(False)
    result = score_features(lm, sae, ["Cats are lovely pets."], ["I love my cat.", "Taxes rose again.",
                                                                   "The dog barked."])
    assert result.scores.shape == (128,) and 0 < result.coverage <= 1
    assert result.scores.min() >= 0 and result.scores.max() == pytest.approx(1.0)
    result.save(tmp_path / "s.json")
    assert torch.equal(AlignmentScores.load(tmp_path / "s.json", sae).scores, result.scores)
    other = SAE(SAEConfig(576, 128, "topk", k=8, hook_name="blocks.4.hook_resid_post"))
    with pytest.raises(SaescopeError, match="another SAE"):
        AlignmentScores.load(tmp_path / "s.json", other)
    with pytest.raises(SaescopeError, match="at least"):
        score_features(lm, sae, [], ["a", "b"])
