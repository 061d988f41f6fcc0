"""``saescope edit trace|rome|ft|eval``: causal tracing, ROME and FT-L edits, and their scores."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.cli.common import (
    DEVICE_OPTION,
    JSON_OPTION,
    MEASURE_DTYPE_OPTION,
    MODEL_OPTION,
    check_folder,
    config_options,
    console,
    print_json,
)
from saescope.editing.config import FtConfig, RomeConfig

PROMPT_OPTION = typer.Option(..., help="The prompt with {} where the subject goes, e.g. 'Name: {}. Gender:'.")
SUBJECT_OPTION = typer.Option(..., help="The subject, e.g. Ben.")
TARGET_OPTION = typer.Option(..., help="The new completion, with its leading space, e.g. ' Female'.")
PARAPHRASES_OPTION = typer.Option(None, help="Other wordings of the prompt, with {} ('|'-separated).")
NEIGHBOURS_OPTION = typer.Option(None, help="Other subjects whose answers must not change (comma-separated).")

edit_app = typer.Typer(no_args_is_help=True, help="Model editing: causal tracing and ROME rank-one edits.")


@edit_app.command("trace")
def trace(
    prompt: str = typer.Option(..., help="The full prompt, e.g. 'Name: Ben. Gender:'."),
    subject: str = typer.Option(..., help="The words of the prompt the fact is about (their noise is corrupted)."),
    out: Path = typer.Option(..., help="Output folder (trace.json, trace.png)."),
    answer: str = typer.Option(None, help="A single-token answer to trace; default: the model's top next token."),
    kinds: str = typer.Option("resid,mlp,attn", help="What to restore: resid, mlp, attn (comma-separated)."),
    noise: float = typer.Option(3.0, help="Noise scale, in standard deviations of the embeddings."),
    samples: int = typer.Option(5, help="Noise draws averaged per restoration."),
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Corrupt the subject, restore each layer's state, and map where the answer comes back.

    Example: saescope edit trace --prompt "Name: Ben. Gender:" --subject Ben --out trace
    """
    from saescope.editing.tracing import causal_trace
    from saescope.errors import SaescopeError
    from saescope.model.loading import load_model

    check_folder(out)
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
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
    config: RomeConfig = None,
) -> None:
    """Make the prompt about SUBJECT continue with TARGET by a rank-one edit of one MLP, and score it.

    Example: saescope edit rome --prompt "Name: {}. Gender:" --subject Ben --target " Female" --out ben
    """
    from saescope.editing.request import EditRequest
    from saescope.editing.rome import rome_edit
    from saescope.model.loading import load_model

    check_folder(out)
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
@config_options(FtConfig)
def fine_tune(
    prompt: str = PROMPT_OPTION,
    subject: str = SUBJECT_OPTION,
    target: str = TARGET_OPTION,
    out: Path = typer.Option(..., help="Output folder of the edit."),
    paraphrases: str = PARAPHRASES_OPTION,
    neighbours: str = NEIGHBOURS_OPTION,
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
    config: FtConfig = None,
) -> None:
    """FT-L: constrained fine-tuning of one MLP output projection (the ROME paper's baseline), scored.

    Example: saescope edit ft --prompt "Name: {}. Gender:" --subject Ben --target " Female" --layer 6 --out ben-ft
    """
    from saescope.editing.fine_tune import ft_l_edit
    from saescope.editing.request import EditRequest
    from saescope.model.loading import load_model

    check_folder(out)
    request = EditRequest(prompt, subject, target)
    lm = load_model(model, device=device, dtype=dtype, purpose="measure")
    edit = ft_l_edit(lm, request, config)
    _score_and_save(lm, edit, out, paraphrases, neighbours, json_out)


@edit_app.command("eval")
def evaluate(
    edit: Path = typer.Argument(..., help="An edit folder (from `saescope edit rome` or `edit ft`)."),
    paraphrases: str = PARAPHRASES_OPTION,
    neighbours: str = NEIGHBOURS_OPTION,
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = MEASURE_DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Score a saved edit: efficacy, paraphrase, specificity, target probability, CE/KL.

    Example: saescope edit eval ben --paraphrases "Gender of {}:" --neighbours "Tom,Sam"
    """
    from saescope.editing.weight_edit import load_edit
    from saescope.model.loading import load_model

    loaded = load_edit(edit)
    lm = load_model(model, device=device, dtype=dtype, purpose="measure")
    _score_and_save(lm, loaded, None, paraphrases, neighbours, json_out)
