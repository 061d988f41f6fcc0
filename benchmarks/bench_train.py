"""Our SAE trainer against SAELens 6.x training the same TopK SAE, in the same run, same machine.

Same model (the embedded SmolLM2 checkpoint), hook (layer 12 residual output), width, k, batch,
context, learning rate, corpus text and token budget. Each trainer runs in its own process (SAELens
from its own venv, `make bench` installs it in .venv-saelens). Throughput is steady state: tokens
per second over the second half of the optimizer steps, model forward included. Both SAEs are then
evaluated by the same code on the same held-out tokens.

Both sides run the model in the same precision: ``--dtype auto`` (the default) resolves it as
saescope does (bfloat16 only on CPUs where it is faster), and SAELens gets ``autocast_lm`` exactly
when that is bfloat16. The default run (65,536 tokens) takes ~5 min on 2 cores; ``--full`` trains on
262,144 tokens.

Prints, last line: ``train_sae ours=<tok/s> saelens=<tok/s> ratio=<x> dtype=<name> cpu=<capability>``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import machine, parse_args, threads  # noqa: E402


def ours_worker(args: argparse.Namespace) -> None:
    import torch

    from saescope.sae.training import TrainConfig, train_sae

    torch.set_num_threads(threads())
    config = TrainConfig(hook=f"blocks.{args.layer}.hook_resid_post", features=args.features, k=args.k,
                         tokens=args.tokens, batch_size=args.batch_size, context=args.context, lr=args.lr,
                         warmup_steps=10, buffer_tokens=65536, dtype=args.dtype, corpus=args.corpus, log_every=1)
    started = time.perf_counter()
    train_sae(config, args.out, progress=False)
    # The trainer's own step log (seconds since the start, after every step): no private method is patched.
    log = [json.loads(line) for line in (Path(args.out) / "training_log.jsonl").read_text().splitlines()]
    stamps = [entry["seconds"] for entry in log]
    half = len(stamps) // 2
    rate = (len(stamps) - 1 - half) * args.batch_size / (stamps[-1] - stamps[half])
    print(json.dumps({"tokens_per_s": rate, "steps": len(stamps), "seconds": time.perf_counter() - started}))


def run_worker(cmd: list[str]) -> dict:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"worker failed: {' '.join(cmd[:3])}...\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=65_536)
    parser.add_argument("--full", action="store_true", help="the long version: 262,144 tokens")
    parser.add_argument("--features", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--dtype", default="auto", help="model precision of both sides: auto | float32 | bfloat16")
    parser.add_argument("--saelens-python", default=str(ROOT / ".venv-saelens" / "bin" / "python"))
    parser.add_argument("--eval-tokens", type=int, default=4096)
    parser.add_argument("--worker", choices=["ours"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parse_args(parser, {"tokens": 2048, "features": 256, "batch_size": 512, "context": 64, "eval_tokens": 256})
    if args.worker == "ours":
        ours_worker(args)
        return

    from saescope.corpus import load_corpus
    from saescope.model.loading import embedded_model_path, load_model
    from saescope.precision import dtype_name, resolve_dtype

    if args.full:
        args.tokens = 262_144
    dtype = dtype_name(resolve_dtype(args.dtype))
    autocast = ["--autocast-lm"] if dtype == "bfloat16" else []
    from saescope.sae.evaluation import evaluate_sae
    from saescope.sae.formats import load_sae

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    corpus = tmp / "train.jsonl"
    corpus.write_text("".join(json.dumps({"text": d.text}) + "\n" for d in load_corpus("embedded", "train")))
    common = ["--tokens", str(args.tokens), "--features", str(args.features), "--k", str(args.k),
              "--batch-size", str(args.batch_size), "--context", str(args.context), "--lr", str(args.lr),
              "--layer", str(args.layer), "--corpus", str(corpus)]
    # A smoke run without the SAELens venv (make test does not build it) checks our side alone.
    with_saelens = Path(args.saelens_python).exists()
    if not with_saelens and not args.smoke:
        sys.exit(f"no SAELens at {args.saelens_python}: `make bench` installs it (make .venv-saelens/.installed)")
    ours = run_worker([sys.executable, __file__, "--worker", "ours", "--dtype", dtype, *common,
                       "--out", str(tmp / "ours")])
    folders = {"ours": tmp / "ours"}
    rates = {"ours": ours["tokens_per_s"]}
    if with_saelens:
        saelens = run_worker([args.saelens_python, str(ROOT / "benchmarks" / "saelens_train_worker.py"), *common,
                              "--model", embedded_model_path(), "--out", str(tmp / "saelens"), *autocast])
        folders["saelens"] = next(p.parent for p in (tmp / "saelens").rglob("cfg.json"))
        rates["saelens"] = saelens["tokens_per_s"]
    lm = load_model()
    fvu = {}
    for name, folder in folders.items():
        metrics = evaluate_sae(lm, load_sae(folder), tokens=args.eval_tokens, progress=False)
        fvu[name] = f"{metrics.fvu:.4f}"
        print(f"{name:8s} tok/s={rates[name]:.0f} fvu={metrics.fvu:.4f} ce_loss_score={metrics.ce_loss_score:.4f} "
              f"l0={metrics.l0:.1f}")
    theirs = f"{rates['saelens']:.0f}" if with_saelens else "absent"
    ratio = f"{rates['ours'] / rates['saelens']:.2f}" if with_saelens else "absent"
    print(f"train_sae_fvu tokens={args.tokens} ours={fvu['ours']} saelens={fvu.get('saelens', 'absent')} "
          f"{machine(dtype)}")
    print(f"train_sae ours={rates['ours']:.0f} saelens={theirs} ratio={ratio} {machine(dtype)}")


if __name__ == "__main__":
    main()
