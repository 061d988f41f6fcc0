"""Steered generation speed, as ratios against baselines run in the same process.

1. Steered (as ``saescope.generate`` runs it: hooks + ``decode_layout``) vs plain Hugging Face
   ``model.generate`` (KV cache), same prompt, exactly ``--tokens`` new tokens, greedy, at batch 1
   and batch 8. Steering = an ``add`` of one SAE feature (the common case) and,
   for information, a ``clamp`` (which encodes with the SAE at every step).
   Prints ``steer ours=<tok/s> plain=<tok/s> ratio=<x> batch=<b>``.
   Then ``decode_bandwidth gbs=<weights read per second> copy_read_gbs=<ceiling> ratio=<x>``: the
   steered batch-1 decode's weight bytes per step (every linear weight once) times its steps per
   second, against the read bandwidth of a plain torch copy of a 512 MB tensor on the same machine.
2. Against IBM sae-steering's generation loop: for every new token, re-tokenize the text and re-run
   the whole sequence with the intervention hooked, no cache, argmax, append.
   Prints ``steer_vs_nocache tokens=<n> ratio=<x>`` for 64 and 256 tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

from saescope.model.fast_decode import decode_layout
from saescope.model.loading import LoadedModel, load_model
from saescope.sae.formats import load_sae

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, parse_args, threads
from saescope.model.hooks import applied
from saescope.steering import FeatureEdit, FeatureSteering

PROMPT = "What is your favorite animal? Tell me why."


def timed(fn, repeats: int) -> float:
    return interleaved([fn], repeats)[0]


def interleaved(fns, repeats: int) -> list[float]:
    """Median time of each function, run in turn (plain, steered, plain, ...) so drift hits all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


@torch.no_grad()
def kv_generate(lm: LoadedModel, batch: int, tokens: int, intervention=None, ours: bool = True) -> None:
    """``ours``: as ``saescope.generate`` runs it (intervention hooks + ``decode_layout``); else plain
    Hugging Face ``generate``."""
    ids = lm.tokenize([PROMPT] * batch)
    options = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                   pad_token_id=lm.tokenizer.eos_token_id)
    with applied(intervention, lm), (decode_layout(lm.model) if ours else contextlib.nullcontext()):
        lm.model.generate(**ids, **options)


def weight_bytes(lm: LoadedModel) -> int:
    """Bytes of weights one batch-1 decode step reads: every linear layer's weight (the LM head once,
    also when it is tied to the embedding; the embedding itself gives one row)."""
    seen = {m.weight.data_ptr(): m.weight.numel() * m.weight.element_size()
            for m in lm.model.modules() if isinstance(m, torch.nn.Linear)}
    return sum(seen.values())


def copy_read_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """Read bandwidth of a plain torch copy of a large tensor (GB read per second), the machine's ceiling."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    seconds = timed(lambda: target.copy_(source), repeats)
    return source.numel() * 4 / seconds / 1e9


@torch.no_grad()
def ibm_loop(lm: LoadedModel, tokens: int, intervention) -> str:
    """IBM's way: re-tokenize and re-run everything for each new token, no KV cache."""
    text = PROMPT
    with intervention.apply(lm):
        for _ in range(tokens):
            ids = lm.tokenizer(text, return_tensors="pt")["input_ids"]
            logits = lm.model(ids, use_cache=False).logits[0, -1]
            logits[lm.tokenizer.eos_token_id] = -float("inf")  # same length as the others
            text += lm.tokenizer.decode([int(logits.argmax())])
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--feature", type=int, default=0)
    parser.add_argument("--dtype", default="auto", help="auto (see `saescope info`) | float32 | bfloat16")
    parser.add_argument("--full", action="store_true", help="the long version: 256 and 1024 tokens without a cache")
    args = parse_args(parser, {"tokens": 4, "repeats": 1})
    if args.full:
        args.repeats = max(args.repeats, 5)
    torch.set_num_threads(threads())
    lm = load_model(dtype=args.dtype)
    sae = load_sae("default")
    add = FeatureSteering(sae, [FeatureEdit(args.feature, "add", 8.0)])
    clamp = FeatureSteering(sae, [FeatureEdit(args.feature, "set", 5.0)])
    kv_generate(lm, 1, 8, add)  # warm-up
    for batch in (1, 8):
        plain, steered, clamped = interleaved([lambda: kv_generate(lm, batch, args.tokens, ours=False),
                                               lambda: kv_generate(lm, batch, args.tokens, add),
                                               lambda: kv_generate(lm, batch, args.tokens, clamp)], args.repeats)
        rate = batch * args.tokens
        tag = machine(lm.dtype)
        print(f"steer_set ours={rate / clamped:.1f} plain={rate / plain:.1f} ratio={plain / clamped:.3f} "
              f"batch={batch} {tag}", flush=True)
        print(f"steer ours={rate / steered:.1f} plain={rate / plain:.1f} ratio={plain / steered:.3f} batch={batch} {tag}",
              flush=True)
        if batch == 1:
            decode_gbs = weight_bytes(lm) * args.tokens / steered / 1e9
    ceiling = copy_read_gbs()
    print(f"decode_bandwidth gbs={decode_gbs:.2f} copy_read_gbs={ceiling:.2f} ratio={decode_gbs / ceiling:.2f} "
          f"weights_mb={weight_bytes(lm) / 2**20:.0f} {machine(lm.dtype)}", flush=True)
    for tokens in ((64, 256, 1024) if args.full else (4, 8) if args.smoke else (64, 256)):
        ours = timed(lambda: kv_generate(lm, 1, tokens, add), 1 if tokens > 64 else args.repeats)
        loop = timed(lambda: ibm_loop(lm, tokens, add), 1)
        print(f"steer_vs_nocache tokens={tokens} ours_s={ours:.1f} loop_s={loop:.1f} ratio={loop / ours:.2f} "
              f"{machine(lm.dtype)}", flush=True)


if __name__ == "__main__":
    main()
