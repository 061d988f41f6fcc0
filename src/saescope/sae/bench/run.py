"""``bench_sae``: run SAEBench-compatible evals on several SAEs, write one JSON per SAE and eval
(``schema``), ``table.csv`` (one row per SAE, one column per ``eval.category.metric``) and
``comparison.png`` (the headline metrics side by side).

Example::

    bench_sae(lm, {"default": load_sae("default"), "mine": load_sae("runs/mine")}, ["core", "sparse_probing"], "bench")
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel
from saescope.sae.bench.schema import eval_output, write_output
from saescope.sae.core import SAE
from saescope.storage import atomic_path

EVALS = ("core", "sparse_probing", "scr", "tpp", "absorption", "meta_structure")
NOT_YET = ("unlearning",)
PLUGGED = ("autointerp",)  # evals that live above the SAE layer and are handed in (``extra``)
HEADLINE = {"core": ["reconstruction_quality.explained_variance", "model_performance_preservation.ce_loss_score",
                     "model_behavior_preservation.kl_div_score", "misc_metrics.frac_alive"],
            "sparse_probing": ["sae.sae_top_1_test_accuracy", "sae.sae_top_5_test_accuracy", "llm.llm_top_1_test_accuracy"],
            "scr": ["scr_metrics.scr_metric_threshold_10"], "tpp": ["tpp_metrics.tpp_threshold_10_total_metric"],
            "absorption": ["mean.mean_absorption_fraction_score"],
            "meta_structure": ["meta_structure.decoder_fraction_variance_explained"],
            "autointerp": ["autointerp.autointerp_score"]}


def check_evals(evals: list[str] | str, extra: Mapping[str, Any] | None = None) -> list[str]:
    """The eval names, checked: one line naming an unknown or not-yet-built eval."""
    names = [e.strip() for e in (evals.split(",") if isinstance(evals, str) else evals) if e.strip()]
    known = [*EVALS, *(extra or {})]
    if not names:
        raise SaescopeError(f"no eval given: use some of {', '.join(known)}")
    for name in names:
        if name in NOT_YET:
            raise SaescopeError(f"the {name} eval is not built into sae bench yet: use {', '.join(known)}")
        if name in PLUGGED and name not in (extra or {}):
            raise SaescopeError(f"the {name} eval runs saescope's explain/score pipeline: pass "
                                "extra=saescope.autointerp.saebench.EXTRA to bench_sae (saescope sae bench does)")
        if name not in known:
            raise SaescopeError(f"unknown eval {name!r}: use {', '.join(known)}")
    return names


def _run_one(lm: LoadedModel, sae: SAE, name: str, tokens: int, progress: bool, shared: dict[str, Any],
             options: dict[str, Any], extra: Mapping[str, Any]) -> tuple[dict, list, dict, dict]:
    """``(metrics, details, unstructured, eval_config)`` of one eval with its ``options`` (keyword
    arguments of its function); ``shared`` keeps what several evals of one SAE read (the pooled
    biographies of scr and tpp)."""
    dtype = str(lm.dtype).removeprefix("torch.")
    if name == "core":
        from saescope.sae.bench.core import core_eval

        return (*core_eval(lm, sae, tokens, progress), {"tokens": tokens, "context_size": 128, "dataset": "embedded heldout",
                                                          "llm_dtype": dtype, "compute_kl": True, "compute_ce_loss": True})
    if name == "sparse_probing":
        from saescope.sae.bench.sparse_probing import DATASETS, KS, sparse_probing_eval

        return (*sparse_probing_eval(lm, sae), {"dataset_names": list(DATASETS), "k_values": list(KS),
                                                "llm_dtype": dtype, "pooling": "mean"})
    if name in extra:
        return extra[name](lm, sae, **options)
    if name in ("scr", "tpp"):
        from saescope.sae.bench import scr_tpp

        check = scr_tpp.check_n_values(tuple(options.get("n_values", [n for n in scr_tpp.N_VALUES if n <= sae.d_sae])),
                                       sae.d_sae)
        if "biographies" not in shared:
            shared["biographies"] = scr_tpp.pooled_splits(lm, sae)
        run = scr_tpp.scr_eval if name == "scr" else scr_tpp.tpp_eval
        return (*run(lm, sae, check, data=shared["biographies"]), {"dataset_names": ["saescope/shift_biographies"],
                                                                    "n_values": list(check), "perform_scr": name == "scr",
                                                                    "llm_dtype": dtype, "pooling": "mean"})
    if name == "absorption":
        from saescope.sae.bench.absorption import WARNING, absorption_eval

        tqdm.write(WARNING)
        settings = {"words_per_letter": 100, "max_k": 10, "f1_jump": 0.03} | options
        return (*absorption_eval(lm, sae, **settings), {"prompt_template": "{word} has the first letter:",
                                                        "llm_dtype": dtype, **settings})
    from saescope.sae.bench.meta_structure import meta_structure_eval

    return meta_structure_eval(sae, **options)


def bench_sae(lm: LoadedModel, saes: Mapping[str, SAE], evals: list[str] | str, out: str | Path,
              tokens: int = 50_000, progress: bool = True, options: Mapping[str, dict[str, Any]] | None = None,
              extra: Mapping[str, Any] | None = None) -> Any:
    """Every eval of every SAE; returns the table (a pandas DataFrame, also ``out/table.csv``).
    ``extra`` adds evals built above the SAE layer by name (``saescope.autointerp.saebench.EXTRA``).

    ``options`` gives an eval's settings by name, e.g. ``{"scr": {"n_values": [2, 10]},
    "meta_structure": {"steps": 500}, "absorption": {"words_per_letter": 40}}``."""
    import pandas as pd

    extra = dict(extra or {})
    names = check_evals(evals, extra)
    if not saes:
        raise SaescopeError("no SAE given")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SaescopeError(f"{out} is a file: out must name a folder")
    for sae in saes.values():  # every SAE checked before anything is written
        lm.check_sae(sae)
    rows = []
    for sae_name, sae in saes.items():
        row: dict[str, Any] = {"sae": sae_name, "architecture": sae.cfg.activation, "d_sae": sae.d_sae}
        shared: dict[str, Any] = {}
        for name in tqdm(names, desc=f"bench {sae_name}", disable=not progress):
            metrics, details, unstructured, config = _run_one(lm, sae, name, tokens, progress, shared,
                                                              dict((options or {}).get(name, {})), extra)
            write_output(out, eval_output(name, config, metrics, details, sae, sae_name, lm.name, unstructured))
            row |= {f"{name}.{category}.{metric}": value for category, values in metrics.items()
                    for metric, value in values.items()}
        rows.append(row)
    table = pd.DataFrame(rows)
    with atomic_path(out / "table.csv") as tmp:
        table.to_csv(tmp, index=False)
    _plot(table, names, out / "comparison.png")
    return table


def _plot(table: Any, names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [f"{name}.{metric}" for name in names for metric in HEADLINE[name] if f"{name}.{metric}" in table]
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        ax.bar(table["sae"], table[column], color="#4c72b0")
        ax.set_title(column.split(".")[-1].replace("_", " "), fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
