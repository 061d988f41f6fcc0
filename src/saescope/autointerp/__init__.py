"""Auto-interpretation: LLM explanations of SAE features, scored on held-out contexts, stored in the RUN.

``client`` (the protocol), ``local_client`` / ``http_client`` (a local chat model, any OpenAI-compatible
server), ``cache`` (answers on disk), ``examples`` / ``prompts`` (what the LLM reads), ``explain``,
``scorers`` / ``score``, ``search`` (features by explanation) and ``server`` (``saescope serve-llm``).
"""
