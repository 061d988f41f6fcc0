"""Model editing on the embedded model: ROME vs FT-L on single flips, the gender-vector study, ROME speed.

1. ``rome``: ``--requests`` held-out male names flipped to " Female" and as many female names to " Male",
   one ROME edit each (``RomeConfig`` defaults: r-ROME, 10 prefixes, 25 steps) at ``--layer``;
   efficacy on "Name: X. Gender:", paraphrase on ``editing.names.PARAPHRASES``, specificity on 10 other
   held-out names of the same gender (they must keep their answer). FT-L on the same layer beside it,
   at ``--ft-epsilon``.
2. ``gender_vector``: ``saescope edit gender-vector`` with ``--names`` names per gender (half discovery),
   the flip test on ``--heldout`` held-out names per gender; no bias side effects (they take minutes).
3. ``rome_speed``: one default ROME edit with the key statistics cached (``edit_s``), and the key
   statistics' tokens/s against a plain forward pass over the same windows (``covariance_ratio``).
4. ``rome_stats_stability`` (``--stability`` only): the update direction from key statistics over
   5k-50k tokens against 100k tokens.

Choices made on the *discovery* names (``split_names(seed=1)``), never on the held-out names reported
here: layer 6 (ROME with 3 prefixes on 2 + 2 discovery requests, layers 4/6/9/12 gave specificity
0.90/0.975/0.725/0.50 at efficacy and paraphrase 1.0; the single-prompt causal trace of a male name
peaks at layer 17, where held-out specificity was 0.38); FT-L ε = 5e-3, the smallest of
5e-4/2e-3/5e-3/1e-2 with efficacy 1.0 there (the paper's 5e-4 gave efficacy 0.25).

Usage: ``python benchmarks/bench_edit.py [--requests 3] [--names 40] [--heldout 16]`` (9:40 on 2 cores, AVX2, float32).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from saescope.bias.gender_vector.config import GenderVectorConfig
from saescope.bias.gender_vector.names import ANSWERS, OTHER, PARAPHRASES, PROMPT, gendered_names, split_names
from saescope.bias.gender_vector.study import run_gender_vector_study
from saescope.corpus import first_windows
from saescope.editing import EditRequest, RomeConfig
from saescope.editing.evaluation import edit_scores
from saescope.editing.fine_tune import ft_l_edit
from saescope.editing.rome import rome_edit, rome_edits
from saescope.editing.statistics import key_second_moment
from saescope.model.loading import load_model

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, parse_args


def requests_and_neighbours(lm, per_gender: int) -> list[tuple[EditRequest, list[str]]]:
    """Held-out names of each gender as flip requests, each with 10 other held-out names of its gender."""
    names = split_names(gendered_names(lm, 60), seed=1)
    out = []
    for gender in ("male", "female"):
        pool = list(names[(names.split == "heldout") & (names.gender == gender)].name)
        for name in pool[:per_gender]:
            out.append((EditRequest(PROMPT, name, ANSWERS[OTHER[gender]]), [n for n in pool if n != name][:10]))
    return out


def mean_scores(lm, edits, pairs) -> dict[str, float]:
    scores = [edit_scores(lm, e, list(PARAPHRASES), neighbours, ce_tokens=512) for e, (_, neighbours) in zip(edits, pairs)]
    return {key: statistics.mean(float(s[key]) for s in scores) for key in ("efficacy", "paraphrase", "specificity",
                                                                             "ce_increase")}


def rome_line(lm, per_gender: int, rome: RomeConfig, ft_epsilon: float) -> None:
    pairs = requests_and_neighbours(lm, per_gender)
    requests = [request for request, _ in pairs]
    layer = rome.layer
    started = time.perf_counter()
    edits = rome_edits(lm, requests, rome, batch_size=len(requests))
    rome_s = time.perf_counter() - started
    ours = mean_scores(lm, edits, pairs)
    ft = mean_scores(lm, [ft_l_edit(lm, r, layer, epsilon=ft_epsilon, lr=ft_epsilon) for r in requests], pairs)
    print(f"rome requests={len(requests)} layer={layer} efficacy={ours['efficacy']:.3f} "
          f"paraphrase={ours['paraphrase']:.3f} specificity={ours['specificity']:.3f} "
          f"ce_increase={ours['ce_increase']:.4f} ft_l_efficacy={ft['efficacy']:.3f} "
          f"ft_l_paraphrase={ft['paraphrase']:.3f} ft_l_specificity={ft['specificity']:.3f} ft_l_epsilon={ft_epsilon:g} "
          f"batch_s={rome_s:.1f} {machine(lm.dtype)}", flush=True)


def gender_vector_line(lm, names: int, heldout: int, rome: RomeConfig) -> None:
    layer = rome.layer
    config = GenderVectorConfig(names=names, layer=layer, heldout_limit=heldout, ce_edits=2, bias_side_effects=False,
                                generations=0, stats_tokens=rome.stats_tokens, steps=rome.steps)
    with tempfile.TemporaryDirectory() as folder:
        s = run_gender_vector_study(lm, folder, config, progress=False)
        directions = pd.read_csv(Path(folder) / "directions.csv")
    for row in directions.itertuples():
        print(f"gender_vector_direction name={row.direction} norm={row.norm:.1f} f2m={row.f2m:.3f} m2f={row.m2f:.3f} "
              f"noop={row.noop:.3f} others_unchanged={row.others_unchanged:.3f} ce_increase={row.ce_increase:.4f} "
              f"{machine(lm.dtype)}",
              flush=True)
    print(f"gender_vector names={names} layer={layer} classifier_acc={s['classifier_acc']:.3f} "
          f"flip_f2m={s['flip_f2m']:.3f} flip_m2f={s['flip_m2f']:.3f} noop_same_gender={s['noop_same_gender']:.3f} "
          f"others_unchanged={s['others_unchanged']:.3f} ce_increase={s['ce_increase']:.4f} "
          f"seconds={s['seconds']:.0f} {machine(lm.dtype)}", flush=True)


@torch.no_grad()
def stability_line(lm, layer: int, sizes: list[int]) -> None:
    """How many tokens the key statistics need: the ROME update direction C⁻¹k* of six name requests
    from C over n tokens, as cosine with the one from the largest n (``--stability``)."""
    from saescope.editing.values import request_rows, subject_keys

    keys = []
    for name in ("Ben", "James", "Robert", "Mary", "Linda", "Susan"):
        item = request_rows(lm, EditRequest(PROMPT, name, " Female"), [""])
        keys.append(subject_keys(lm, layer, item.rows[:1], item.subject_at[:1])[0])
    keys = torch.stack(keys).double()
    directions = {}
    for n in sizes:
        moment = key_second_moment(lm, layer, n, cache=False).double()
        ridge = 1e-4 * moment.diagonal().mean() * torch.eye(len(moment), dtype=torch.float64)
        solved = torch.linalg.solve(moment + ridge, keys.T).T
        directions[n] = solved / solved.norm(dim=-1, keepdim=True)
    reference = directions[max(sizes)]
    cosines = " ".join(f"n{n}={float((directions[n] * reference).sum(-1).min()):.4f}" for n in sizes[:-1])
    print(f"rome_stats_stability layer={layer} reference={max(sizes)} min_cosine {cosines} {machine(lm.dtype)}", flush=True)


@torch.no_grad()
def speed_line(lm, rome: RomeConfig, tokens: int) -> None:
    request = EditRequest(PROMPT, "Ben", " Female")
    layer = rome.layer
    key_second_moment(lm, layer, rome.stats_tokens)  # cached by the rome line
    started = time.perf_counter()
    rome_edit(lm, request, rome)
    edit_s = time.perf_counter() - started
    started = time.perf_counter()
    key_second_moment(lm, layer, tokens, cache=False)
    stats_s = time.perf_counter() - started
    windows = first_windows(lm.tokenizer, tokens, "train", "embedded", 128)
    started = time.perf_counter()
    for start in range(0, len(windows), 8):
        lm.model(input_ids=windows[start:start + 8].to(lm.device))
    forward_s = time.perf_counter() - started
    print(f"rome_speed edit_s={edit_s:.1f} covariance_ratio={forward_s / stats_s:.2f} stats_tokens={tokens} "
          f"stats_s={stats_s:.1f} forward_s={forward_s:.1f} {machine(lm.dtype)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3, help="flip requests per gender for the rome line")
    parser.add_argument("--names", type=int, default=40, help="names per gender in the gender-vector study")
    parser.add_argument("--heldout", type=int, default=16, help="held-out names per gender in its flip test")
    parser.add_argument("--speed-tokens", type=int, default=4096, help="tokens for the covariance speed ratio")
    parser.add_argument("--layer", type=int, default=6, help="edited layer (chosen on discovery names)")
    parser.add_argument("--ft-epsilon", type=float, default=5e-3, help="FT-L's L-infinity bound")
    parser.add_argument("--stability", action="store_true",
                        help="only: how many tokens the key statistics need (about 4 minutes)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--stats-tokens", type=int, default=50_000, help="corpus tokens behind ROME's key statistics")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps of each ROME value (default RomeConfig's)")
    args = parse_args(parser, {"requests": 1, "names": 16, "heldout": 2, "speed_tokens": 256, "stats_tokens": 1024,
                               "steps": 2})
    lm = load_model(dtype=args.dtype)
    rome = RomeConfig(layer=args.layer, stats_tokens=args.stats_tokens, **({"steps": args.steps} if args.steps else {}))
    if args.stability:
        stability_line(lm, args.layer, [5_000, 10_000, 25_000, 50_000, 100_000])
        return
    rome_line(lm, args.requests, rome, args.ft_epsilon)
    gender_vector_line(lm, args.names, args.heldout, rome)
    speed_line(lm, rome, args.speed_tokens)


if __name__ == "__main__":
    main()
