"""``saescope edit trace|rome|ft|eval``: causal tracing, ROME and FT-L edits, and their scores."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.bias.gender_vector_config import GenderVectorConfig
from saescope.cli.common import MEASURE_DTYPE_HELP, config_options, console, print_json
from saescope.editing.config import RomeConfig

PROMPT_OPTION = typer.Option(..., help="The prompt with {} where the subject goes, e.g. 'Name: {}. Gender:'.")
SUBJECT_OPTION = typer.Option(..., help="The subject, e.g. Ben.")
TARGET_OPTION = typer.Option(..., help="The new completion, with its leading space, e.g. ' Female'.")
PARAPHRASES_OPTION = typer.Option(None, help="Other wordings of the prompt, with {} ('|'-separated).")
NEIGHBOURS_OPTION = typer.Option(None, help="Other subjects whose answers must not change (comma-separated).")

edit_app = typer.Typer(no_args_is_help=True, help="Model editing: causal tracing and ROME rank-one edits.")


def _folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        from saescope.errors import SaescopeError

        raise SaescopeError(f"{out} is a file: --out must name a folder")


@edit_app.command("trace")
def trace(
    prompt: str = typer.Option(..., help="The full prompt, e.g. 'Name: Ben. Gender:'."),
    subject: str = typer.Option(..., help="The words of the prompt the fact is about (their noise is corrupted)."),
    out: Path = typer.Option(..., help="Output folder (trace.json, trace.png)."),
    answer: str = typer.Option(None, help="A single-token answer to trace; default: the model's top next token."),
    kinds: str = typer.Option("resid,mlp,attn", help="What to restore: resid, mlp, attn (comma-separated)."),
    noise: float = typer.Option(3.0, help="Noise scale, in standard deviations of the embeddings."),
    samples: int = typer.Option(5, help="Noise draws averaged per restoration."),
    model: str = typer.Option(None),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("auto", help=MEASURE_DTYPE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Corrupt the subject, restore each layer's state, and map where the answer comes back.

    Example: saescope edit trace --prompt "Name: Ben. Gender:" --subject Ben --out trace
    """
    from saescope.editing.tracing import causal_trace
    from saescope.errors import SaescopeError
    from saescope.model.loading import load_model

    _folder(out)
    if samples < 1 or not noise > 0 or noise > 1e3:
        raise SaescopeError("--samples must be >= 1 and --noise a positive number (default 3)")
    lm = load_model(model, device=device, dtype=dtype, purpose="measure")
    result = causal_trace(lm, prompt, subject, answer, noise, samples,
                          kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()))
    out.mkdir(parents=True, exist_ok=True)
    result.save_json(out / "trace.json")
    result.plot(out / "trace.png")
    if json_out:
        print_json(result.to_dict())
        return
    console.print(f"p({result.answer!r}) clean {result.p_clean:.3f}, subject corrupted {result.p_corrupt:.3f}")
    for kind in result.effects:
        layer = result.best_layer(kind)
        console.print(f"{kind:>5}: largest effect at the subject's last token in layer {layer} "
                      f"({float(result.effects[kind][layer, result.subject[-1]]):+.3f})")
    console.print(f"wrote {out / 'trace.json'} and {out / 'trace.png'}")


@edit_app.command("rome")
@config_options(RomeConfig)
def rome(
    prompt: str = PROMPT_OPTION,
    subject: str = SUBJECT_OPTION,
    target: str = TARGET_OPTION,
    out: Path = typer.Option(..., help="Output folder of the edit (edit.json, edit.safetensors, scores.json)."),
    paraphrases: str = PARAPHRASES_OPTION,
    neighbours: str = NEIGHBOURS_OPTION,
    model: str = typer.Option(None),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("auto", help=MEASURE_DTYPE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: RomeConfig = None,
) -> None:
    """Make the prompt about SUBJECT continue with TARGET by a rank-one edit of one MLP, and score it.

    Example: saescope edit rome --prompt "Name: {}. Gender:" --subject Ben --target " Female" --out ben
    """
    from saescope.editing.request import EditRequest
    from saescope.editing.rome import rome_edit
    from saescope.model.loading import load_model

    _folder(out)
    request = EditRequest(prompt, subject, target)
    lm = load_model(model, device=device, dtype=dtype, purpose="measure")
    edit = rome_edit(lm, request, config, progress=True)
    _score_and_save(lm, edit, out, paraphrases, neighbours, json_out)


def _score_and_save(lm, edit, out: Path | None, paraphrases: str | None, neighbours: str | None,
                    json_out: bool) -> None:
    from saescope.editing.evaluation import edit_scores
    from saescope.precision import MEASURE, precision_record
    from saescope.storage import write_json

    scores = edit_scores(lm, edit, [p.strip() for p in (paraphrases or "").split("|") if p.strip()],
                         [n.strip() for n in (neighbours or "").split(",") if n.strip()])
    precision = precision_record(lm.dtype, MEASURE)
    if out is not None:
        edit.info["scores"] = scores
        edit.info["precision"] = precision
        edit.save(out)
        write_json(out / "scores.json", {**scores, "precision": precision})
    if json_out:
        print_json({"layer": edit.layer, "module": edit.module, "method": edit.method, "scores": scores,
                    "precision": precision})
        return
    console.print(f"{edit.method} edit of {edit.module}; |delta| {edit.info.get('delta_norm', float('nan')):.1f}")
    for name, value in scores.items():
        console.print(f"{name:>22}: {value}")
    if out is not None:
        console.print(f"wrote {out}")


@edit_app.command("ft")
def fine_tune(
    prompt: str = PROMPT_OPTION,
    subject: str = SUBJECT_OPTION,
    target: str = TARGET_OPTION,
    layer: int = typer.Option(..., help="Layer whose MLP output projection is fine-tuned."),
    out: Path = typer.Option(..., help="Output folder of the edit."),
    epsilon: float = typer.Option(5e-4, help="L-infinity bound on every weight change."),
    steps: int = typer.Option(25, help="Adam steps."),
    lr: float = typer.Option(5e-4, help="Adam learning rate."),
    paraphrases: str = PARAPHRASES_OPTION,
    neighbours: str = NEIGHBOURS_OPTION,
    model: str = typer.Option(None),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("auto", help=MEASURE_DTYPE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """FT-L: constrained fine-tuning of one MLP output projection (the ROME paper's baseline), scored.

    Example: saescope edit ft --prompt "Name: {}. Gender:" --subject Ben --target " Female" --layer 6 --out ben-ft
    """
    from saescope.editing.fine_tune import ft_l_edit
    from saescope.editing.request import EditRequest
    from saescope.errors import SaescopeError
    from saescope.model.loading import load_model

    _folder(out)
    if steps < 1 or not lr > 0 or lr > 1:
        raise SaescopeError("--steps must be >= 1 and --lr a number in (0, 1]")
    request = EditRequest(prompt, subject, target)
    lm = load_model(model, device=device, dtype=dtype, purpose="measure")
    edit = ft_l_edit(lm, request, layer, epsilon, steps, lr)
    _score_and_save(lm, edit, out, paraphrases, neighbours, json_out)


@edit_app.command("eval")
def evaluate(
    edit: Path = typer.Argument(..., help="An edit folder (from `saescope edit rome` or `edit ft`)."),
    paraphrases: str = PARAPHRASES_OPTION,
    neighbours: str = NEIGHBOURS_OPTION,
    model: str = typer.Option(None, help="Hub id or local folder; default: the embedded model."),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("auto", help=MEASURE_DTYPE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Score a saved edit: efficacy, paraphrase, specificity, target probability, CE/KL.

    Example: saescope edit eval ben --paraphrases "Gender of {}:" --neighbours "Tom,Sam"
    """
    from saescope.editing.weight_edit import load_edit
    from saescope.model.loading import load_model

    loaded = load_edit(edit)
    lm = load_model(model, device=device, dtype=dtype, purpose="measure")
    _score_and_save(lm, loaded, None, paraphrases, neighbours, json_out)


@edit_app.command("gender-vector")
@config_options(GenderVectorConfig)
def gender_vector(
    out: Path = typer.Option(..., help="Output folder (report.html, summary.json, directions.csv, ...)."),
    model: str = typer.Option(None),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("auto", help=MEASURE_DTYPE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    config: GenderVectorConfig = None,
) -> None:
    """The gender vector in ROME's edit deltas: flip names, classify the deltas, build one vector, flip
    held-out names with it and compare it with the CAA and SAE gender directions. Re-running on the same
    folder resumes the discovery edits.

    Example: saescope edit gender-vector --out gender-vector --names 100
    """
    from saescope.bias.gender_vector_study import run_gender_vector_study
    from saescope.model.loading import load_model

    _folder(out)
    lm = load_model(model, device=device, dtype=dtype, purpose="measure")
    summary = run_gender_vector_study(lm, out, config, progress=not json_out)
    if json_out:
        print_json(summary)
        return
    for key in ("layer", "discovery", "heldout", "classifier_acc", "flip_f2m", "flip_m2f", "noop_same_gender",
                "others_unchanged", "ce_increase"):
        console.print(f"{key:>18}: {summary[key]}")
    console.print(f"wrote {out / 'report.html'}")
