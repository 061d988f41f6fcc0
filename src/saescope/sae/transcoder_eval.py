"""How well a transcoder set stands in for the MLPs (``saescope transcoders eval``).

On held-out windows: each layer's **MLP-output FVU** (Σ‖y − ŷ‖² / Σ‖y − ȳ‖² over tokens, sinks left
out), its L0 and dead fraction, and the model's next-token **CE with every MLP of the set replaced** by
its transcoder at once (each MLP's output becomes the transcoder's output for that MLP's actual input,
so errors compound through the layers as in the replacement model of an attribution graph), beside the
clean CE and the CE with those MLPs zeroed. ``replaced_ce_increase`` is relative to the clean CE.
Sink positions keep the MLP's own output in the replaced runs, as every saescope replacement does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saescope.activations.read import sink_mask
from saescope.corpus import first_windows
from saescope.errors import SaescopeError
from saescope.model.hooks import intervene
from saescope.model.likelihood import next_token_logprobs_of, summed_ce
from saescope.model.loading import LoadedModel
from saescope.sae.core import SAE
from saescope.sae.transcoders import INPUT_HOOK, OUTPUT_HOOK, TranscoderSet


@dataclass
class TranscoderEvaluation:
    fvu: dict[int, float]
    l0: dict[int, float]
    dead_fraction: dict[int, float]
    ce_clean: float
    ce_replaced: float
    ce_zero: float
    n_tokens: int

    @property
    def mlp_fvu_median(self) -> float:
        return float(torch.tensor(list(self.fvu.values())).median())

    @property
    def replaced_ce_increase(self) -> float:
        return self.ce_replaced / self.ce_clean - 1

    def to_dict(self) -> dict:
        return {**asdict(self), "mlp_fvu_median": self.mlp_fvu_median, "replaced_ce_increase": self.replaced_ce_increase}


def kept(x: Tensor, y: Tensor) -> Tensor:
    """``[batch, seq]``: the positions that are a sink on neither side of the MLP."""
    return ~sink_mask(x) & ~sink_mask(y)


def replacing(transcoders: TranscoderSet, zero: bool = False) -> dict:
    """Hook functions that replace each MLP's output by its transcoder's (or by zeros) off the sinks."""
    fns = {}
    for layer in transcoders.layers:
        seen: dict[str, Tensor] = {}

        def read(x: Tensor, seen: dict = seen) -> None:
            seen["x"] = x

        def write(y: Tensor, seen: dict = seen, sae=transcoders[layer]) -> Tensor:
            new = torch.zeros_like(y) if zero else sae(seen["x"].float()).to(y.dtype)
            return torch.where(kept(seen["x"], y)[..., None], new, y)

        fns[INPUT_HOOK.format(layer=layer)] = read
        fns[OUTPUT_HOOK.format(layer=layer)] = write
    return fns


def evaluate_transcoders(lm: LoadedModel, transcoders: TranscoderSet, tokens: int = 20_000, batch_size: int = 8,
                         context: int = 128, progress: bool = True) -> TranscoderEvaluation:
    """The figures of the module docstring on ``tokens`` held-out tokens of the embedded corpus."""
    transcoders.check_model(lm)
    if tokens <= 0:
        raise SaescopeError(f"tokens must be positive, got {tokens}")
    windows = first_windows(lm.tokenizer, tokens, "heldout", "embedded", context)
    layers = transcoders.layers
    sse = {layer: 0.0 for layer in layers}
    sums = {layer: torch.zeros(lm.d_model, dtype=torch.float64) for layer in layers}
    squares, active, counts, fired = dict.fromkeys(layers, 0.0), dict.fromkeys(layers, 0.0), dict.fromkeys(layers, 0), {}
    ce = {"clean": 0.0, "replaced": 0.0, "zero": 0.0}
    n_predictions = 0
    hooks = [h.format(layer=layer) for layer in layers for h in (INPUT_HOOK, OUTPUT_HOOK)]
    for start in tqdm(range(0, len(windows), batch_size), disable=not progress, desc="eval transcoders", unit="batch"):
        ids = windows[start:start + batch_size].to(lm.device)
        captured: dict[str, Tensor] = {}
        with torch.no_grad():
            with intervene(lm.model, {h: (lambda a, h=h: captured.__setitem__(h, a)) for h in hooks}):
                logits = {"clean": lm.model(input_ids=ids).logits.float()}
            for name, zero in (("replaced", False), ("zero", True)):
                with intervene(lm.model, replacing(transcoders, zero)):
                    logits[name] = lm.model(input_ids=ids).logits.float()
        for name, value in logits.items():
            ce[name] += summed_ce(next_token_logprobs_of(value), ids)
        n_predictions += ids[:, 1:].numel()
        for layer in layers:
            x, y = captured[INPUT_HOOK.format(layer=layer)], captured[OUTPUT_HOOK.format(layer=layer)]
            keep = kept(x, y)
            x, y = x[keep].float(), y[keep].float()
            with torch.no_grad():
                feats = transcoders[layer].encode(x)
                recon = transcoders[layer].decode(feats) + transcoders[layer].skip(x)
            sse[layer] += float((y - recon).pow(2).sum())
            sums[layer] += y.double().sum(0)
            squares[layer] += float(y.double().pow(2).sum())
            active[layer] += float((feats > 0).sum())
            fired[layer] = fired.get(layer, torch.zeros(feats.shape[-1], dtype=torch.bool)) | (feats > 0).any(0).cpu()
            counts[layer] += len(x)
    fvu = {layer: sse[layer] / max(squares[layer] - float(sums[layer].pow(2).sum()) / counts[layer], 1e-12)
           for layer in layers}
    return TranscoderEvaluation(fvu=fvu, l0={layer: active[layer] / counts[layer] for layer in layers},
                                dead_fraction={layer: 1 - float(fired[layer].float().mean()) for layer in layers},
                                ce_clean=ce["clean"] / n_predictions, ce_replaced=ce["replaced"] / n_predictions,
                                ce_zero=ce["zero"] / n_predictions, n_tokens=min(counts.values()))


def evaluate_layer(lm: LoadedModel, sae: SAE, tokens: int = 20_000, batch_size: int = 8,
                   progress: bool = True) -> dict[str, float | int | str]:
    """One layer of a transcoder set (what ``sae eval`` reports for it): its MLP-output FVU, L0 and dead
    share, and the CE with only that MLP replaced (and zeroed)."""
    layer = int(sae.cfg.metadata["layer"])
    figures = evaluate_transcoders(lm, TranscoderSet({layer: sae}, sae.cfg.model_name), tokens=tokens,
                                   batch_size=batch_size, progress=progress)
    return {"kind": "transcoder", "layer": layer, "mlp_fvu": figures.fvu[layer], "l0": figures.l0[layer],
            "dead_fraction": figures.dead_fraction[layer], "ce_loss_clean": figures.ce_clean,
            "ce_loss_mlp_replaced": figures.ce_replaced, "ce_loss_mlp_zeroed": figures.ce_zero}
