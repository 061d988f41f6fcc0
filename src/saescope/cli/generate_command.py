"""``saescope generate``: plain generation, or with saved edits and interventions applied."""

from __future__ import annotations

from pathlib import Path

import typer

from saescope.cli.common import DEVICE_OPTION, DTYPE_OPTION, JSON_OPTION, MODEL_OPTION, console, print_json


def generate_command(
    prompt: list[str] = typer.Option(..., help="Prompt (repeat for several)."),
    edit: list[Path] = typer.Option(None, help="An edit folder to apply (repeat to compose several)."),
    intervention: Path = typer.Option(None, help="A saved intervention (JSON) to apply as well."),
    compare: bool = typer.Option(False, "--compare", help="Also generate without them (same seeds)."),
    temperature: float = typer.Option(1.0, help="0 = greedy."),
    n: int = typer.Option(1, help="Samples per prompt (seed, seed+1, ...)."),
    max_new_tokens: int = typer.Option(50),
    seed: int = typer.Option(0),
    chat: bool = typer.Option(False, "--chat", help="Apply the model's chat template."),
    model: str = MODEL_OPTION,
    device: str = DEVICE_OPTION,
    dtype: str = DTYPE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Generate text, optionally with edits and an intervention applied (the weights are restored after).

    Example: saescope generate --prompt "Name: Ben. Gender:" --edit ben --compare --temperature 0
    """
    from saescope.editing.weight_edit import load_applicable
    from saescope.model.generation import generate
    from saescope.model.hooks import Together
    from saescope.model.loading import load_model

    parts = [load_applicable(path) for path in edit or []]
    if intervention is not None:
        parts.append(load_applicable(intervention))
    lm = load_model(model, device=device, dtype=dtype)
    applied = Together(parts) if parts else None
    outputs = generate(lm, prompt, applied, max_new_tokens, temperature, n, seed, chat)
    plain = generate(lm, prompt, None, max_new_tokens, temperature, n, seed, chat) if compare and parts else None
    if json_out:
        print_json([{"prompt": p, "outputs": o, **({"plain": plain[i]} if plain else {})}
                    for i, (p, o) in enumerate(zip(prompt, outputs))])
        return
    for i, (text, samples) in enumerate(zip(prompt, outputs)):
        for j, sample in enumerate(samples):
            console.print(f"[bold]{text}[/bold] (seed {seed + j})" + (" [with edits]" if parts else ""))
            console.print(sample, markup=False)
            if plain:
                console.print("[dim]without:[/dim]")
                console.print(plain[i][j], markup=False)
