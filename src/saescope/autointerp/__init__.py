"""Auto-interpretation: LLM explanations of SAE features, scored on held-out contexts, stored in the RUN.

``llm/`` (the client stack: the protocol, a local chat model, any OpenAI-compatible server, answers on
disk, ``saescope serve-llm``), ``examples`` / ``prompts`` (what the LLM reads), ``explain``, ``scorers``
(how right an explanation is) / ``score_run`` (scoring a RUN), ``intervention`` and ``search``
(features by explanation).
"""
