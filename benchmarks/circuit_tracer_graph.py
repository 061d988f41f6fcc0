"""circuit-tracer's attribution graph of given token ids, on a saescope transcoder set: run by
``bench_graphs.py --circuit-tracer-python PY`` in a virtual environment that has circuit-tracer 0.5
(``make circuit-tracer-venv``), never imported by saescope.

The set is read from its files (circuit-tracer's layout) into circuit-tracer's own ``SingleLayerTranscoder``
and ``TranscoderSet``. One adaptation: circuit-tracer 0.5's ``TopK`` keeps the k largest pre-activations
even when negative, while a saescope TopK transcoder applies a ReLU after the top-k (Gao et al. 2024), so the
activation function given to circuit-tracer is ReLU ∘ TopK: the same transcoder. The model is circuit-tracer's
nnsight backend (its ``LlamaForCausalLM`` mapping) on the local model folder, float32, CPU.

Writes ``--out`` (safetensors): ``adjacency``, ``active_features`` [n, 3] (layer, position, feature) of the
adjacency's feature rows, ``logit_tokens``, ``seconds``, and ``scores``: circuit-tracer's replacement and
completeness scores of its graph.

With ``--validate JSON`` it first reads a saescope ``graph-neuronpedia.json`` with circuit-tracer's own pydantic
models (``Model``, ``Link``), and fails if they refuse it.

Usage: ``PY benchmarks/circuit_tracer_graph.py --model DIR --transcoders DIR --tokens 504,23,11 --out F [--validate J]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file


class ReluTopK(torch.nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, indices = x.topk(self.k, dim=-1)
        return torch.zeros_like(x).scatter_(-1, indices, values.relu())


def load_set(folder: Path):
    from circuit_tracer.transcoder import TranscoderSet
    from circuit_tracer.transcoder.activation_functions import JumpReLU
    from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder

    config = yaml.safe_load((folder / "config.yaml").read_text())
    transcoders = {}
    for layer, name in enumerate(config["transcoders"]):
        tensors = load_file(str(folder / name))
        d_transcoder, d_model = tensors["W_enc"].shape
        if "k" in tensors:
            activation = ReluTopK(int(tensors.pop("k")))
        elif "activation_function.threshold" in tensors:
            activation = JumpReLU(tensors["activation_function.threshold"], 0.1)
        else:
            activation = torch.nn.ReLU()
        transcoder = SingleLayerTranscoder(d_model, d_transcoder, activation, layer,
                                           skip_connection="W_skip" in tensors, device=torch.device("cpu"),
                                           dtype=torch.float32)
        transcoder.load_state_dict(tensors, strict=False)
        transcoders[layer] = transcoder
    return TranscoderSet(transcoders, feature_input_hook=config["feature_input_hook"],
                         feature_output_hook=config["feature_output_hook"], scan=config.get("scan"))


def compatible_folder(model: str) -> str:
    """The model folder as transformers 4.57 (circuit-tracer 0.5's pin) reads it: a copy of its small files,
    the weights linked, with the tokenizer class that transformers 5 writes (``TokenizersBackend``) replaced
    by the fast tokenizer class of that model family."""
    import atexit
    import json
    import shutil
    import tempfile

    source = Path(model)
    config = json.loads((source / "tokenizer_config.json").read_text())
    if config.get("tokenizer_class") != "TokenizersBackend":
        return model
    folder = Path(tempfile.mkdtemp(prefix="ct-model-"))
    atexit.register(shutil.rmtree, folder, True)
    for item in source.iterdir():
        if item.suffix == ".safetensors":
            (folder / item.name).symlink_to(item.resolve())
        elif item.is_file():
            shutil.copy(item, folder / item.name)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--transcoders", type=Path, required=True)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--validate", type=Path, help="a graph-neuronpedia.json of saescope's to read with "
                                                      "circuit-tracer's own pydantic models (frontend.graph_models)")
    args = parser.parse_args()
    if args.validate is not None:
        import json

        from circuit_tracer.frontend.graph_models import Link, Model

        graph = Model(**json.loads(args.validate.read_text()))
        for link in graph.links:
            Link(**link)

    from circuit_tracer import ReplacementModel, attribute
    from circuit_tracer.graph import compute_graph_scores

    transcoders = load_set(args.transcoders)
    model = ReplacementModel.from_pretrained_and_transcoders(compatible_folder(args.model), transcoders, backend="nnsight",
                                                             device=torch.device("cpu"), dtype=torch.float32)
    ids = torch.tensor([int(t) for t in args.tokens.split(",")])
    started = time.perf_counter()
    graph = attribute(ids, model, max_n_logits=10, desired_logit_prob=0.95, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    logits = torch.tensor([int(getattr(t, "vocab_idx", getattr(t, "token_id", -1))) for t in graph.logit_targets])
    save_file({"adjacency": graph.adjacency_matrix.float().contiguous(),
               "active_features": graph.active_features[graph.selected_features].long().contiguous(),
               "logit_tokens": logits, "seconds": torch.tensor(seconds),
               "scores": torch.tensor(compute_graph_scores(graph))}, str(args.out))


if __name__ == "__main__":
    main()
