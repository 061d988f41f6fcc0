"""The LLM client stack of explain and score: one protocol (``protocol``: chat requests in, completions
with log-probabilities out), a local Hugging Face chat model (``local``), any OpenAI-compatible server
(``http``), an on-disk answer cache (``cache``), the factory the commands use (``build``) and
``saescope serve-llm`` (``server``), so a lab can share one explainer."""
