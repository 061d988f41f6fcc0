"""SAELens interop, the direction the tests cannot check without SAELens: SAELens loads our SAE.

Computes the bundled SAE's outputs on a fixed input with saescope, then runs the SAELens venv's
python on ``saelens_load_ours.py``. Prints ``saelens_loads_ours architecture=<a> max_abs_diff=<x> dtype=float32 cpu=<c>``.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from saescope.sae.formats import default_sae_path, load_sae

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import machine, parse_args  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("saelens_python", nargs="?", default=str(ROOT / ".venv-saelens" / "bin" / "python"))
    args = parse_args(parser, {})
    saelens_python = args.saelens_python
    if not Path(saelens_python).exists() and not args.smoke:
        sys.exit(f"no SAELens at {saelens_python}: `make bench` installs it (make .venv-saelens/.installed)")
    sae = load_sae("default")
    torch.manual_seed(0)
    x = torch.randn(16, sae.d_in) * 30
    features = sae.encode(x)
    reference = Path(tempfile.mkdtemp()) / "reference.safetensors"
    save_file({"input": x, "features": features, "reconstruction": sae.decode(features)}, str(reference))
    if not Path(saelens_python).exists():  # make test does not build the SAELens venv: our side only
        print(f"saelens_loads_ours skipped=no_saelens_venv {machine(torch.float32)}")
        return
    check = ROOT / "benchmarks" / "saelens_load_ours.py"
    done = subprocess.run([saelens_python, str(check), str(default_sae_path()), str(reference)], capture_output=True,
                          text=True)
    sys.stderr.write(done.stderr)
    for line in done.stdout.splitlines():  # the SAELens side's line, with the precision and CPU it ran with
        print(f"{line} {machine(torch.float32)}" if line.startswith("saelens_loads_ours") else line)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
