"""Corpora: the embedded one, the held-out split, user files and their errors, token windows."""

import json

import pytest

from saescope.corpus import is_heldout, load_corpus, token_windows
from saescope.errors import SaescopeError


def test_embedded_corpus_splits_by_document_deterministically():
    train, heldout = load_corpus("embedded", "train"), load_corpus("embedded", "heldout")
    assert len(train) > 15_000 and 500 < len(heldout) < 1_500
    assert not {d.doc_id for d in train} & {d.doc_id for d in heldout}
    assert all(is_heldout(d.doc_id) for d in heldout)
    assert {d.doc_id.split("/")[0] for d in train} == {"bbc", "boolq", "quac", "xsum"}


def test_user_files_and_their_errors(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nstill first\n\nsecond doc\n\n\n")
    assert [d.text for d in load_corpus(tmp_path / "a.txt", "all")] == ["first doc\nstill first", "second doc"]
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "one"}) + "\n" + "{bad json\n")
    with pytest.raises(SaescopeError, match="b.jsonl, line 2: not valid JSON"):
        load_corpus(tmp_path / "b.jsonl", "all")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(SaescopeError, match="empty"):
        load_corpus(tmp_path / "empty.txt", "all")
    with pytest.raises(SaescopeError, match="must be .txt"):
        (tmp_path / "c.csv").write_text("x")
        load_corpus(tmp_path / "c.csv", "all")


def test_token_windows_cover_the_text_and_resume(lm):
    docs = load_corpus("embedded", "heldout")[:40]
    windows = list(token_windows(lm.tokenizer, docs, context=64, seed=3))
    assert all(w.shape == (64,) for w in windows)
    n_tokens = sum(len(lm.tokenizer(d.text, add_special_tokens=False)["input_ids"]) + 1 for d in docs)
    assert len(windows) == n_tokens // 64
    resumed = list(token_windows(lm.tokenizer, docs, context=64, seed=3, start=5))
    assert all((a == b).all() for a, b in zip(resumed, windows[5:])) and len(resumed) == len(windows) - 5
