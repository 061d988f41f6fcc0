"""SAEBench 0.6.0's own code on fixed tensors: writes ``saebench-0.6.0/inputs.safetensors`` and
``expected.json``, which ``test_saebench_parity.py`` compares saescope's figures with (≤ 1e-4).

Run it in a venv with SAEBench (``make saebench-reference``: ``.venv-saelens`` plus ``sae-bench==0.6.0``
without its pinned dependencies, scikit-learn and tabulate). SAEBench cannot load SmolLM2, so its
functions get the tensors directly: a small ReLU SAE and pooled-activation batches for SCR/TPP
(``get_effects_per_class_precomputed_acts``, ``ablated_precomputed_activations``), and a stand-in model
whose ``run_with_cache`` returns fixed activations for the absorption calculator
(``FeatureAbsorptionCalculator.calculate_absorption``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

OUT = Path(__file__).parent / "saebench-0.6.0"
D, F, B, L = 16, 40, 12, 6
SCR_KEYS = ("male / female", "female_data_only", "professor / nurse", "nurse_data_only")


class TinySAE(torch.nn.Module):
    """What SAEBench calls on an SAE: ``encode``, ``decode``, ``W_dec``, ``device``."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            self.register_buffer(name, tensors[name])
        self.device = torch.device("cpu")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec


def inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tensors = {"W_enc": torch.randn(D, F, generator=g) / 3, "b_enc": torch.randn(F, generator=g) / 4,
               "W_dec": torch.nn.functional.normalize(torch.randn(F, D, generator=g), dim=-1),
               "b_dec": torch.randn(D, generator=g) / 5, "probe": torch.randn(1, D, generator=g),
               "absorption_acts": torch.randn(20, D, generator=g) * 2}
    for i, key in enumerate(SCR_KEYS):
        acts = torch.randn(B, L, D, generator=g) + 0.5 * i
        acts[:, -2:][torch.rand(B, 2, generator=g) < 0.5] = 0.0  # padding: SAEBench zeroes masked tokens
        tensors[f"acts.{key}"] = acts
    return tensors


def main() -> None:
    import sae_bench.evals.scr_and_tpp.main as scr
    from sae_bench.evals.absorption.feature_absorption_calculator import FeatureAbsorptionCalculator

    tensors = inputs()
    sae = TinySAE(tensors)
    probe = SimpleNamespace(net=SimpleNamespace(weight=tensors["probe"]))
    acts = {key: tensors[f"acts.{key}"] for key in SCR_KEYS}
    expected: dict = {}
    effects = scr.get_effects_per_class_precomputed_acts(sae, probe, "male / female", acts, True, 5)
    expected["scr_effects"] = effects.tolist()
    pair = {k: acts[k] for k in ("professor / nurse", "nurse_data_only")}
    expected["tpp_effects"] = scr.get_effects_per_class_precomputed_acts(sae, probe, "professor / nurse", pair, False,
                                                                         5).tolist()
    to_ablate = torch.zeros(F, dtype=torch.bool)
    to_ablate[[1, 5, 9, 30]] = True
    expected["ablated"] = scr.ablated_precomputed_activations(acts["professor / nurse"], sae, to_ablate, 5).tolist()

    words = [f" w{i}" for i in range(20)]
    table = tensors["absorption_acts"]
    model = SimpleNamespace(
        to_tokens=lambda text: torch.zeros(1, 4, dtype=torch.long),
        run_with_cache=lambda prompts, names_filter: (None, {names_filter[0]: torch.stack(
            [torch.stack([torch.zeros(D), torch.zeros(D), table[int(p.rsplit(" w", 1)[1].split(":")[0])], torch.zeros(D)])
             for p in prompts])}))
    calculator = FeatureAbsorptionCalculator(model=model, icl_word_list=[" cat"], max_icl_examples=1, batch_size=7)
    direction = tensors["probe"][0]
    for main in ([3], [3, 17]):
        result = calculator.calculate_absorption(sae, words, direction, main, layer=0, show_progress=False)
        expected[f"absorption.{'_'.join(map(str, main))}"] = [
            [r.absorption_fraction, bool(r.is_full_absorption)] for r in result.word_results]
    OUT.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / "inputs.safetensors")
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
