"""``saescope info``: the model, its hook points, and the precision ``--dtype auto`` picks here."""

from __future__ import annotations

from saescope.cli.common import DEVICE_OPTION, DTYPE_OPTION, JSON_OPTION, MODEL_OPTION, console, print_json


def info(model: str = MODEL_OPTION,
         device: str = DEVICE_OPTION,
         dtype: str = DTYPE_OPTION,
         json_out: bool = JSON_OPTION) -> None:
    """The model's name, layers, width and hook points, and the precision chosen on this machine."""
    from saescope.model.arch import layer_list_path
    from saescope.model.loading import load_model
    from saescope.precision import dtype_name, precision_report

    lm = load_model(model, device=device, dtype=dtype)
    blocks = layer_list_path(lm.model)
    kinds = ("resid_pre", "attn_out", "mlp_out", "resid_post")
    result = {"model": lm.name, "architecture": type(lm.model).__name__, "n_layers": lm.n_layers,
              "d_model": lm.d_model, "vocab_size": int(lm.model.config.vocab_size),
              "n_params": sum(p.numel() for p in lm.model.parameters()), "blocks_module": blocks,
              "dtype": dtype_name(lm.dtype), "precision": precision_report(device),
              "hook_points": [f"blocks.{layer}.hook_{kind}" for layer in range(lm.n_layers) for kind in kinds]}
    if json_out:
        print_json(result)
        return
    for key, value in result.items():
        if key not in ("hook_points", "precision"):
            console.print(f"[bold]{key}[/bold]: {value}")
    report = result["precision"]
    console.print(f"[bold]precision[/bold]: --dtype auto picks {report['choice']} on {report['device']} "
                  f"({report['capability']}): {report['reason']}")
    console.print(f"[bold]hook points[/bold]: blocks.{{0..{lm.n_layers - 1}}}.hook_{{{','.join(kinds)}}} "
                  f"or module paths like {blocks}.0")
