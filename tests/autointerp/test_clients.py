"""The local chat client (batched = one at a time), the answer cache, and usage accounting."""

import math

import pytest

from saescope.autointerp.llm.cache import CachedClient
from saescope.autointerp.llm.local import LocalChatClient
from saescope.autointerp.llm.protocol import ChatRequest, Completion, LLMError

REQUESTS = [ChatRequest((("user", "Name a colour."),), max_tokens=6),
            ChatRequest((("system", "Answer Yes or No."), ("user", "Is the sky blue?")), max_tokens=1, top_logprobs=5),
            ChatRequest((("user", "Write the number after three, in words, and then stop talking please."),), max_tokens=4)]


@pytest.fixture(scope="module")
def local(lm):
    return LocalChatClient(lm, batch_size=8)


def test_batched_answers_equal_one_at_a_time(local):
    together = local.complete_many(REQUESTS)
    alone = [local.complete_many([r])[0] for r in REQUESTS]
    assert [a.text for a in together] == [a.text for a in alone]
    assert all(isinstance(a, Completion) and 0 < a.completion_tokens <= r.max_tokens for a, r in zip(together, REQUESTS))
    top = together[1].top_logprobs
    assert top is not None and len(top) <= 5 and all(v <= 0 for v in top.values())
    assert sum(math.exp(v) for v in top.values()) <= 1.0 + 1e-4
    for key, value in top.items():
        assert value == pytest.approx(alone[1].top_logprobs[key], abs=1e-3)
    assert together[0].top_logprobs is None


class CountingClient:
    """A client that answers from a list and counts what it was asked (to test the cache, not an LLM)."""

    model = "counting"

    def __init__(self) -> None:
        self.asked: list[ChatRequest] = []

    def complete_many(self, requests):
        self.asked += requests
        return [LLMError("refused") if "fail" in r.messages[0][1] else Completion(r.messages[0][1][::-1], None, 10, 2)
                for r in requests]


def test_the_cache_answers_repeats_and_retries_failures(tmp_path):
    inner = CountingClient()
    client = CachedClient(inner, tmp_path / "llm.sqlite")
    asks = [ChatRequest((("user", "abc"),)), ChatRequest((("user", "fail"),)), ChatRequest((("user", "xyz"),))]
    first = client.complete_many(asks)
    assert [getattr(a, "text", None) for a in first] == ["cba", None, "zyx"] and isinstance(first[1], LLMError)
    again = CachedClient(inner, tmp_path / "llm.sqlite").complete_many(asks)  # a new process would see the same file
    assert len(inner.asked) == 4 and inner.asked[-1] == asks[1]  # only the failure was asked again
    assert again[0].cached and again[0].text == "cba"
    assert client.usage.summary() == {"requests": 3, "cached": 0, "failed": 1, "prompt_tokens": 20,
                                      "completion_tokens": 4, "cost": 0.0}
    other_settings = ChatRequest((("user", "abc"),), max_tokens=5)
    client.complete_many([other_settings])
    assert inner.asked[-1] == other_settings  # the key holds every setting
