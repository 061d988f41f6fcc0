"""``contrast fit`` on 100 gender pairs with the bundled SAE: wall time and the share in the model.

Prints ``contrast_fit pairs=100 seconds=<s> forward_share=<x> r2=<r> n_features=<n>``.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from saescope.model.loading import load_model
from saescope.sae.formats import load_sae
from saescope.steering.contrast.fit import fit_contrast
from saescope.steering.contrast.pairs import pairs_path, read_pairs

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, parse_args, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    args = parse_args(parser, {"pairs": 8})
    torch.set_num_threads(threads())
    lm, sae = load_model(), load_sae("default")
    pairs = read_pairs(pairs_path("gender"))[:args.pairs]
    start = time.perf_counter()
    report = fit_contrast(lm, sae, pairs, Path(tempfile.mkdtemp()) / "fit")
    seconds = time.perf_counter() - start
    chosen = report["sparse_fit"]["chosen"]
    print(f"contrast_fit pairs={len(pairs)} seconds={seconds:.1f} forward_share={report['forward_seconds'] / seconds:.2f} "
          f"r2={chosen['r2']:.3f} n_features={chosen['n_features']} {machine(lm.dtype)}")


if __name__ == "__main__":
    main()
