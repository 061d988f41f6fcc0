"""Check that the real SAELens loads an SAE saved by saescope and computes the same outputs.

Run with the SAELens venv's python: ``.venv-saelens/bin/python benchmarks/saelens_load_ours.py DIR REF``
where REF is a safetensors file with ``input``, ``features`` and ``reconstruction`` computed by
saescope (``make bench`` writes it). Prints ``saelens_loads_ours max_abs_diff=<x>``.
"""

import sys

import torch
from sae_lens import SAE
from safetensors.torch import load_file

sae = SAE.load_from_disk(sys.argv[1], device="cpu")
reference = load_file(sys.argv[2])
with torch.no_grad():
    features = sae.encode(reference["input"])
    recon = sae.decode(features)
diff = max(float((features - reference["features"]).abs().max()), float((recon - reference["reconstruction"]).abs().max()))
print(f"saelens_loads_ours architecture={sae.cfg.architecture()} max_abs_diff={diff:.2e}")
sys.exit(0 if diff < 1e-3 else 1)
