"""Train a TopK SAE with the real SAELens 6.x (run with the SAELens venv's python, not saescope's).

Prints one JSON line: steady-state tokens/s (second half of the steps, model forward included),
steps and wall time. The SAE is saved in SAELens format to --out.
"""

import argparse
import json
import time

import datasets
import torch
from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
from sae_lens.saes.topk_sae import TopKTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer

parser = argparse.ArgumentParser()
for name, kind in (("--model", str), ("--corpus", str), ("--out", str), ("--tokens", int), ("--features", int),
                   ("--k", int), ("--batch-size", int), ("--context", int), ("--lr", float), ("--layer", int)):
    parser.add_argument(name, type=kind, required=True)
parser.add_argument("--autocast-lm", action="store_true")
args = parser.parse_args()
torch.set_num_threads(2)

stamps: list[float] = []
original_step = SAETrainer._train_step


def timed_step(self, *a, **kw):
    out = original_step(self, *a, **kw)
    stamps.append(time.perf_counter())
    return out


SAETrainer._train_step = timed_step
texts = [json.loads(line)["text"] for line in open(args.corpus)]
steps = args.tokens // args.batch_size
cfg = LanguageModelSAERunnerConfig(
    sae=TopKTrainingSAEConfig(d_in=576, d_sae=args.features, k=args.k, dtype="float32", device="cpu"),
    model_name=args.model, model_class_name="AutoModelForCausalLM", hook_name=f"model.layers.{args.layer}",
    dataset_path=args.corpus, is_dataset_tokenized=False, streaming=False, context_size=args.context,
    training_tokens=args.tokens, train_batch_size_tokens=args.batch_size, store_batch_size_prompts=16,
    n_batches_in_buffer=32, lr=args.lr, lr_warm_up_steps=10, lr_decay_steps=steps // 5, device="cpu",
    autocast_lm=args.autocast_lm, logger=LoggingConfig(log_to_wandb=False), output_path=args.out,
    n_checkpoints=0, exclude_special_tokens=True, verbose=False,
)
started = time.perf_counter()
LanguageModelSAETrainingRunner(cfg, override_dataset=datasets.Dataset.from_dict({"text": texts})).run()
half = len(stamps) // 2
rate = (len(stamps) - 1 - half) * args.batch_size / (stamps[-1] - stamps[half])
print(json.dumps({"tokens_per_s": rate, "steps": len(stamps), "seconds": time.perf_counter() - started}))
