"""``hook_tokens`` and ``TokenGate``: which tokens a lexicon-gated erasure leaves alone, across padding,
decode steps and saved files; ``scrub`` builds one gated erasure per layer from block 0."""

from __future__ import annotations

import pytest
import torch

from saescope.errors import SaescopeError
from saescope.model.hooks import TOKENS, capture, execution_order, intervene, resolve_hook
from saescope.steering import Interventions, SubspaceErasure, TokenGate, load_intervention
from saescope.steering.token_gate import read_lexicon


def _gate_marks(lm, gate: TokenGate, *batches: torch.Tensor) -> list[list[list[bool]]]:
    """The marks of one gate hook over consecutive forwards (a prefill, then decode steps)."""
    state: dict = {}
    fn = gate.gate_fn(lm, state)
    out = []
    for ids in batches:
        fn(ids)
        out.append(state["skip"][..., 0].tolist())
    return out


def test_hook_tokens_reads_the_ids_first_and_only_reads(lm):
    ids = torch.tensor([lm.encode("The nurse said that")])
    with capture(lm.model, [TOKENS]) as got:
        lm.model(ids)
    assert torch.equal(got[TOKENS], ids)
    point = resolve_hook(lm.model, TOKENS)
    assert point.module_path == "model.embed_tokens"
    assert execution_order(point) < execution_order(resolve_hook(lm.model, "blocks.0.hook_resid_pre"))
    with pytest.raises(SaescopeError, match="read only"), intervene(lm.model, {TOKENS: lambda t: t * 0}):
        lm.model(ids)


def test_the_gate_marks_gendered_words_names_and_the_sink_only(lm):
    gate = TokenGate("gendered")
    text = "The king told the nurse that Grace and grace and my stepdaughter were late"
    ids = torch.tensor([lm.encode(text)])
    marks = _gate_marks(lm, gate, ids)[0][0]
    pieces = [lm.tokenizer.decode([i]) for i in ids[0]]
    marked = [p for p, m in zip(pieces, marks) if m]
    stepdaughter = lm.encode(" stepdaughter")
    assert len(stepdaughter) > 1  # a word of several tokens: every one of them is marked
    assert marked == ["The", " king", " Grace", *[lm.tokenizer.decode([i]) for i in stepdaughter]]
    words, names = read_lexicon("gendered")
    assert "duchess" in words and "nurse" not in words and "Peter" in names and "Terry" not in names


def test_decode_steps_continue_the_row_and_left_padding_finds_the_sink(lm):
    gate = TokenGate(None, ["stepdaughter"])
    first, *rest = lm.encode(" stepdaughter")
    prompt = torch.tensor([lm.encode("Then my") + [first]])
    steps = [torch.tensor([[token]]) for token in rest]
    marks = _gate_marks(lm, gate, prompt, *steps)
    assert marks[0][0] == [True] + [False] * (prompt.shape[1] - 1)  # the word is not complete yet
    assert all(step == [[True]] for step in marks[1:])  # decode steps: not a sink, the word completes
    fresh = _gate_marks(lm, gate, torch.tensor([[first]]))  # a new one-token sequence: its token is the sink
    assert fresh == [[[True]]]
    short, long = lm.encode("The nurse"), lm.encode("My nurse was very late")
    left = len(long) - len(short)
    padded = torch.tensor([[lm.pad_id] * left + short, long])  # left padding, as batched generation pads
    marks = _gate_marks(lm, gate, padded)[0]
    assert marks[0][:left + 1] == [False] * left + [True] and marks[1][0]
    assert not any(marks[0][left + 1:] + marks[1][1:])


def test_a_gated_erasure_leaves_marked_tokens_exactly_and_erases_the_rest(lm, tmp_path):
    hook = "blocks.3.hook_resid_post"
    torch.manual_seed(0)
    direction, mean = torch.randn(lm.d_model), torch.randn(lm.d_model)
    erase = SubspaceErasure(hook, direction, mean, gate=TokenGate("gendered", ["nanny"]))
    ids = torch.tensor([lm.encode("The nanny told my mother that the pilot was late")])
    marks = torch.tensor(_gate_marks(lm, erase.gate, ids)[0][0])
    with torch.inference_mode(), capture(lm.model, [hook]) as plain:
        lm.model(ids)
    with torch.inference_mode(), erase.apply(lm), capture(lm.model, [hook]) as erased:
        lm.model(ids)
    before, after = plain[hook][0].float(), erased[hook][0].float()
    expected = 1 + len(lm.encode(" nanny")) + len(lm.encode(" mother"))  # The (the sink), nanny, mother
    assert marks.sum() == expected and torch.equal(before[marks], after[marks])
    unit = direction / direction.norm()
    assert torch.allclose((after[~marks] - mean) @ unit, torch.zeros(int((~marks).sum())), atol=1e-3)
    erase.save(tmp_path / "scrub.json")
    again = load_intervention(tmp_path / "scrub.json")
    assert isinstance(again.gate, TokenGate) and again.gate.words == ["nanny"] and again.gate.lexicon == "gendered"
    with torch.inference_mode(), again.apply(lm), capture(lm.model, [hook]) as loaded:
        lm.model(ids)
    assert torch.allclose(loaded[hook], erased[hook], atol=1e-4)  # the basis is orthonormalised again on load


def test_after_marks_everything_from_a_gendered_word_on_across_decode_steps(lm):
    from saescope.steering.base import intervention_from_dict

    gate = TokenGate("gendered", after=True)
    ids = torch.tensor([lm.encode("The nurse told the king that"), lm.encode("The nurse told the pilot that")])
    before = len(lm.encode("The nurse told the"))
    assert len(lm.encode(" king")) == 1 and len(lm.encode(" pilot")) == 1
    marks = _gate_marks(lm, gate, ids, torch.tensor([[5], [5]]))
    assert marks[0][0] == [True] + [False] * (before - 1) + [True] * (ids.shape[1] - before)
    assert marks[0][1] == [True] + [False] * (ids.shape[1] - 1)  # the sink does not start a span
    assert marks[1] == [[True], [False]]  # the decode step continues each row
    erase = SubspaceErasure("blocks.20.hook_resid_post", torch.ones(lm.d_model), gate=gate)
    assert intervention_from_dict(erase.to_dict()).gate.after


def test_bad_gates_are_refused(lm):
    from saescope.bias.data import SelectionPrompts
    from saescope.bias.debias import DebiasConfig, MethodContext
    from saescope.bias.debias.registry import debias_method

    long = "Pneumonoultramicroscopicsilicovolcanoconiosis"
    assert TokenGate("gendered", ["baroness", long]).unmatched(lm) == [long]
    context = MethodContext(lm, None, None, DebiasConfig(method="scrub", preserve=[long]), None, SelectionPrompts.load(),
                            None, "auto")
    with pytest.raises(SaescopeError, match="preserve word 'Pneumono.* the gate cannot match it"):
        debias_method("scrub")(context)
    with pytest.raises(SaescopeError, match="unknown word lexicon 'nope'"):
        TokenGate("nope")
    with pytest.raises(SaescopeError, match="needs a lexicon or at least one word"):
        TokenGate(None, [])
    with pytest.raises(SaescopeError, match="non-empty strings"):
        TokenGate("gendered", ["king", " "])


def test_scrub_erases_from_block_0_up_to_each_candidate_layer(lm):
    from saescope.bias.debias.scrub import scrub_ends, scrubbing

    assert scrub_ends(30, None) == [12, 16, 21, 24, 27]
    assert scrub_ends(30, [5, 2, 5]) == [2, 5]
    with pytest.raises(SaescopeError, match="scrub layer 30 is out of range"):
        scrub_ends(30, [3, 30])
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(3)]
    gate = TokenGate("gendered")
    late = TokenGate("gendered", after=True)
    scrubbed = scrubbing(hooks, {h: torch.ones(lm.d_model) for h in hooks}, {h: torch.zeros(lm.d_model) for h in hooks},
                         [gate, gate, late])
    assert isinstance(scrubbed, Interventions) and [p.hook for p in scrubbed.parts] == hooks
    assert [p.gate for p in scrubbed.parts] == [gate, gate, late]
    assert [h for h, _ in scrubbed.hook_fns(lm)] == [TOKENS, hooks[0], TOKENS, hooks[1], TOKENS, hooks[2]]


def test_the_cli_refuses_a_preserve_word_the_gate_cannot_match(tmp_path):
    from helpers import saescope

    out = tmp_path / "debias"
    result = saescope("bias", "debias", "--method", "scrub", "--preserve", "Pneumonoultramicroscopicsilicovolcanoconiosis",
                      "--out", str(out))
    assert result.returncode == 2 and result.stderr.startswith("error: preserve word") and "Traceback" not in result.stderr
    assert not out.exists()


def test_scrub_variants_are_the_distinct_candidates():
    from saescope.bias.debias.scrub import _variants

    assert _variants([12, 27, 29], [16, 21], top=29) == [
        (12, 12, False), (27, 16, False), (27, 16, True), (27, 21, False), (27, 21, True), (29, 16, True), (29, 21, True)]


def test_scrub_flattens_unseen_occupations_and_keeps_definitional_gender(lm):
    from saescope.bias.data import SelectionPrompts
    from saescope.bias.debias import DebiasConfig, MethodContext
    from saescope.bias.debias.registry import debias_method
    from saescope.bias.scoring import p_she
    from saescope.model.hooks import applied

    selection = SelectionPrompts.load()
    context = MethodContext(lm, None, None, DebiasConfig(method="scrub", layers=[27]), None, selection, None, "auto")
    candidates = {label: intervention for label, _, intervention in debias_method("scrub")(context)}
    assert sorted(candidates) == ["0-27 +last after 16 x1", "0-27 +last after 21 x1", "0-27 after 16 x1", "0-27 after 21 x1"]
    occupations = ["The doula said that", "The cheerleader said that", "The lumberjack said that", "The blacksmith said that"]
    definitional = ["My grandmother said that", "The queen said that", "My father said that", "The boy said that"]
    fitted = set(selection.female_occupations + selection.male_occupations)
    assert not {"doula", "cheerleader", "lumberjack", "blacksmith"} & fitted
    plain_occ, plain_def = p_she(lm, occupations), p_she(lm, definitional)
    with applied(candidates["0-27 +last after 16 x1"], lm):
        occ, defs = p_she(lm, occupations), p_she(lm, definitional)

    def gap(p: torch.Tensor) -> float:
        return float(p[:2].mean() - p[2:].mean())

    assert gap(plain_occ) > 0.2 and abs(gap(occ)) < 0.3 * gap(plain_occ)  # the fit_* occupations never fitted it
    assert (plain_def[:2] > 0.8).all() and (plain_def[2:] < 0.35).all()
    assert (defs[:2] > 0.8).all() and (defs[2:] < 0.45).all()  # male subjects drift toward she by < 0.1
    assert (occ - 0.5).abs().mean() < 0.5 * (plain_occ - 0.5).abs().mean()
