"""``saescope edit trace|rome|show``: causal tracing and ROME edits from the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.cli.common import DTYPE_HELP, config_options, console, print_json
from saescope.editing.config import RomeConfig

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
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
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
    lm = load_model(model, device=device, dtype=dtype)
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
    prompt: str = typer.Option(..., help="The prompt with {} where the subject goes, e.g. 'Name: {}. Gender:'."),
    subject: str = typer.Option(..., help="The subject, e.g. Ben."),
    target: str = typer.Option(..., help="The new completion, with its leading space, e.g. ' Female'."),
    out: Path = typer.Option(..., help="Output folder of the edit (edit.json, edit.safetensors, scores.json)."),
    paraphrases: str = typer.Option(None, help="Other wordings of the prompt, with {} ('|'-separated)."),
    neighbours: str = typer.Option(None, help="Other subjects whose answers must not change (comma-separated)."),
    model: str = typer.Option(None),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: RomeConfig = None,
) -> None:
    """Make the prompt about SUBJECT continue with TARGET by a rank-one edit of one MLP, and score it.

    Example: saescope edit rome --prompt "Name: {}. Gender:" --subject Ben --target " Female" --out ben
    """
    from saescope.editing.evaluation import edit_scores
    from saescope.editing.request import EditRequest
    from saescope.editing.rome import rome_edit
    from saescope.model.loading import load_model
    from saescope.storage import write_json

    _folder(out)
    request = EditRequest(prompt, subject, target)
    lm = load_model(model, device=device, dtype=dtype)
    edit = rome_edit(lm, request, config, progress=True)
    scores = edit_scores(lm, edit, [p.strip() for p in (paraphrases or "").split("|") if p.strip()],
                         [n.strip() for n in (neighbours or "").split(",") if n.strip()])
    edit.info["scores"] = scores
    edit.save(out)
    write_json(out / "scores.json", scores)
    if json_out:
        print_json({"layer": edit.layer, "module": edit.module, "scores": scores, "info": edit.info})
        return
    console.print(f"edited {edit.module} ({edit.method}); |delta| {edit.info['delta_norm']:.1f} "
                  f"(value {edit.info['v_norm']:.1f})")
    for name, value in scores.items():
        console.print(f"{name:>22}: {value}")
    console.print(f"wrote {out}")
