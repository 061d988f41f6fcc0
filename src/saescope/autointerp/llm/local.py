"""A local Hugging Face chat model as an explainer/scorer (default: the embedded model).

Requests are formatted with the model's chat template, sorted by length and generated ``batch_size``
at a time (left padding, one ``generate`` call per batch, greedy at temperature 0), so many short
prompts cost about what a few long ones do. The first step's log-softmax gives ``top_logprobs``.
"""

from __future__ import annotations

import torch

from saescope.autointerp.llm.protocol import ChatRequest, Completion, LLMError
from saescope.errors import SaescopeError
from saescope.model.loading import LoadedModel


class LocalChatClient:
    """``LLMClient`` over a loaded model. Example::

        client = LocalChatClient(load_model())
        client.complete_many([ChatRequest((("user", "Say hi"),), max_tokens=5)])[0].text
    """

    def __init__(self, lm: LoadedModel, batch_size: int = 8) -> None:
        if not getattr(lm.tokenizer, "chat_template", None):
            raise SaescopeError(f"{lm.name} has no chat template: choose a chat (instruct) model as the explainer")
        self.lm, self.batch_size, self.model = lm, batch_size, lm.name

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        messages = [{"role": role, "content": content} for role, content in request.messages]
        text = self.lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.lm.encode(text)

    def complete_many(self, requests: list[ChatRequest]) -> list[Completion | LLMError]:
        prompts = [self.prompt_ids(r) for r in requests]
        out: list[Completion | LLMError] = [LLMError("not run")] * len(requests)
        groups: dict[tuple[float, int], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.temperature, r.top_logprobs), []).append(i)
        for members in groups.values():
            members.sort(key=lambda i: len(prompts[i]))
            for start in range(0, len(members), self.batch_size):
                batch = members[start:start + self.batch_size]
                for i, completion in zip(batch, self._generate([requests[i] for i in batch], [prompts[i] for i in batch])):
                    out[i] = completion
        return out

    @torch.no_grad()
    def _generate(self, requests: list[ChatRequest], prompts: list[list[int]]) -> list[Completion]:
        tokenizer, width = self.lm.tokenizer, max(len(p) for p in prompts)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.lm.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.lm.device)
        first = requests[0]
        options = {"do_sample": first.temperature > 0, "pad_token_id": pad, "max_new_tokens": max(r.max_tokens for r in requests),
                   "output_scores": first.top_logprobs > 0, "return_dict_in_generate": True}
        if first.temperature > 0:
            options.update(temperature=first.temperature, top_k=0, top_p=1.0)
        result = self.lm.model.generate(input_ids=ids, attention_mask=mask, **options)
        new = result.sequences[:, width:].tolist()
        completions = []
        for row, (request, tokens) in enumerate(zip(requests, new)):
            tokens = tokens[:request.max_tokens]
            if tokenizer.eos_token_id in tokens:
                tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
            completions.append(Completion(tokenizer.decode(tokens, skip_special_tokens=True),
                                          self._top(result.scores[0][row], request.top_logprobs) if result.scores else None,
                                          prompt_tokens=len(prompts[row]), completion_tokens=len(tokens)))
        return completions

    def _top(self, logits: torch.Tensor, n: int) -> dict[str, float] | None:
        if n <= 0:
            return None
        values, ids = logits.float().log_softmax(-1).topk(n)
        top: dict[str, float] = {}
        for value, token in zip(values.tolist(), ids.tolist()):
            text = self.lm.tokenizer.decode([token])
            top[text] = max(top.get(text, -float("inf")), value)
        return top
