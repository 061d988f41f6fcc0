"""Numbers read from files written by saescope 0.1 as it stood before the move into sub-packages
(commit 28c7bf4): the same public calls, run by that release to write ``release-0.1/expected.json``
(``python tests/compat/probes.py``) and by this one in ``test_saved_files.py``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

FILES = Path(__file__).parent / "release-0.1"
PROMPT = "The nurse said that"


def _she_minus_he(lm, applied=None) -> float:
    from saescope.model.likelihood import next_token_logprobs

    she, he = (lm.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" she", " he"))
    if applied is None:
        return float(next_token_logprobs(lm, [PROMPT], [she, he]).diff().neg()[0, 0])
    with applied.apply(lm):
        return float(next_token_logprobs(lm, [PROMPT], [she, he]).diff().neg()[0, 0])


def probes(lm) -> dict[str, float]:
    """What every saved file gives: the intervention's and the edit's effect on one prompt, the circuit's
    effects, the RUN's statistics."""
    import saescope
    from saescope.circuits.graph import Circuit
    from saescope.editing.weight_edit import load_edit
    from saescope.steering import load_intervention

    intervention = load_intervention(FILES / "debias" / "intervention.json")
    edit = load_edit(FILES / "edit")
    circuit = Circuit.load(FILES / "circuit")
    run = saescope.FeatureRun.load(FILES / "run")
    with torch.inference_mode():
        out = {"plain": _she_minus_he(lm), "debias_intervention": _she_minus_he(lm, intervention),
               "edit": _she_minus_he(lm, edit)}
    out["circuit_nodes"] = len(circuit.nodes)
    out["circuit_edges"] = len(circuit.edges)
    out["circuit_node_effect"] = sum(abs(n.effect) for n in circuit.nodes)
    out["circuit_feature_effects"] = sum(float(t.abs().sum()) for t in circuit.feature_effects.values())
    out["run_max"] = float(run.stats["max"].sum())
    out["run_top_example"] = float(run.examples(int(run.stats.sort_values("max").feature.iloc[-1])).activation.iloc[0])
    return out


if __name__ == "__main__":
    from saescope.model.loading import load_model

    expected = probes(load_model(dtype="float32"))
    (FILES / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    json.dump(expected, sys.stdout, indent=2)
