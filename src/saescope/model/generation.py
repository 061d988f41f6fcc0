"""Text generation with or without an intervention, with paired random seeds.

Sample ``i`` of every call uses the seed ``seed + i``, so a steered and an unsteered call with the
same arguments draw the same random numbers: differences between them are the intervention's
alone. Generation uses the Hugging Face ``generate`` with its KV cache; interventions act on the
prompt and on every generated token. On CPU in fp32, batch-1 decode steps read the wide weight
matrices from column-major copies (``decode_layout``), which is faster.
"""

from __future__ import annotations

import math

import torch

from saescope.errors import SaescopeError, check_text
from saescope.model.fast_decode import decode_layout
from saescope.model.hooks import Applicable, applied
from saescope.model.loading import LoadedModel


def format_prompts(lm: LoadedModel, prompts: list[str], chat: bool = False) -> list[str]:
    """Check the prompts; with ``chat``, wrap each in the model's chat template as a user turn. The
    model's ``instruction`` (the prompting baseline, ``steering.prompt``) goes before each prompt, or
    in the system turn with ``chat``."""
    if not prompts:
        raise SaescopeError("no prompt given")
    for prompt in prompts:
        check_text(prompt, "prompt")
    if not chat:
        return [(lm.instruction or "") + p for p in prompts]
    if not getattr(lm.tokenizer, "chat_template", None):
        raise SaescopeError(f"{lm.name} has no chat template: generate without the chat format")
    system = [{"role": "system", "content": lm.instruction.strip()}] if lm.instruction else []
    return [lm.tokenizer.apply_chat_template([*system, {"role": "user", "content": p}], tokenize=False,
                                             add_generation_prompt=True) for p in prompts]


@torch.no_grad()
def generate(lm: LoadedModel, prompts: list[str], intervention: Applicable | None = None,
             max_new_tokens: int = 50, temperature: float = 1.0, n: int = 1, seed: int = 0,
             chat: bool = False, top_p: float | None = None, streamer: object | None = None) -> list[list[str]]:
    """``n`` completions of each prompt: ``result[prompt_index][sample_index]``.

    ``temperature=0`` is greedy. Example::

        steer = FeatureSteering("default", [FeatureEdit(123, "add", 8.0)])
        steered = generate(lm, ["What is your favorite animal?"], steer, n=3, seed=0)
        plain = generate(lm, ["What is your favorite animal?"], None, n=3, seed=0)
    """
    if max_new_tokens <= 0:
        raise SaescopeError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if not math.isfinite(temperature) or temperature < 0:
        raise SaescopeError(f"temperature must be a finite number >= 0, got {temperature}")
    if n <= 0:
        raise SaescopeError(f"n (samples per prompt) must be positive, got {n}")
    with applied(intervention, lm):  # an instruction (PromptPrefix) is part of the prompt
        texts = format_prompts(lm, prompts, chat)
    tokenizer = lm.tokenizer
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat).to(lm.device)
    finally:
        tokenizer.padding_side = "right"
    options = dict(max_new_tokens=max_new_tokens, do_sample=temperature > 0, pad_token_id=tokenizer.pad_token_id)
    if streamer is not None:  # a transformers streamer (one prompt, n=1): tokens as they are generated
        if len(prompts) != 1 or n != 1:
            raise SaescopeError("streaming generation takes one prompt and n=1")
        options["streamer"] = streamer
    if temperature > 0:
        options.update(temperature=temperature, top_k=0, top_p=top_p if top_p is not None else 1.0)
    results: list[list[str]] = [[] for _ in prompts]
    for sample in range(n):
        torch.manual_seed(seed + sample)
        with applied(intervention, lm), decode_layout(lm.model):
            try:
                out = lm.model.generate(**batch, **options)
            except RuntimeError as exc:
                if "inf" not in str(exc) and "nan" not in str(exc):
                    raise
                raise SaescopeError("the model's outputs became NaN or inf during generation: the intervention "
                                    "is too strong (lower its coefficient)") from None
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        for i, text in enumerate(tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            results[i].append(text)
    return results
