"""SAEBench's ``meta_structure`` eval: how much of the SAE's decoder a small meta-SAE explains.

A BatchTopK meta-SAE (width ``width_ratio`` × d_sae, k = 4; SAEBench's defaults: ratio 0.25,
1,500 steps of 1,024 rows, learning rate 5e-4) is fitted on the decoder rows (``sae.fit_tensor``, the
trainer's objective), and the decoder's fraction of variance explained around its mean row is reported
with the reconstruction MSE and the training time. Higher means the latents share more structure
(they are compositions of fewer meta-latents); SAEBench reports it without a preferred direction.
SAEBench rescales meta-activations by decoder norm; our decoder rows are unit-norm already. The fit
runs on the CPU whatever device the SAE is on: a few thousand rows of a few hundred dimensions, where a
GPU round trip would not pay.
"""

from __future__ import annotations

import math
import time

import torch

from saescope.sae.core import SAE, SAEConfig
from saescope.sae.fit_tensor import fit_rows


def meta_structure_eval(sae: SAE, width_ratio: float = 0.25, k: int = 4, steps: int = 1500, batch_size: int = 1024,
                        lr: float = 5e-4, seed: int = 42) -> tuple[dict, list, dict, dict]:
    """``(metrics, details, unstructured, config)`` of the meta-structure eval."""
    decoder = sae.W_dec.detach().float().cpu()
    width = max(math.ceil(sae.d_sae * width_ratio), k)
    torch.manual_seed(seed)
    meta = SAE(SAEConfig(d_in=sae.d_in, d_sae=width, activation="batchtopk", k=k))
    start = time.perf_counter()
    fit_rows(meta, decoder, steps, min(batch_size, len(decoder)), lr=lr, seed=seed)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        recon = meta(decoder)
    residual = float((decoder - recon).pow(2).sum())
    total = float((decoder - decoder.mean(0)).pow(2).sum())
    metrics = {"meta_structure": {"decoder_fraction_variance_explained": 1 - residual / total if total else 0.0,
                                  "train_time_seconds": seconds,
                                  "final_reconstruction_mse": residual / decoder.numel()}}
    config = {"width_ratio": width_ratio, "k": k, "train_steps": steps, "train_batch_size": batch_size,
              "learning_rate": lr, "random_seed": seed, "dtype": "float32"}
    return metrics, [], {"meta_width": width}, config
