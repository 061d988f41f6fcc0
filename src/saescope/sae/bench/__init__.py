"""SAEBench-compatible evaluation: ``bench_sae`` (``saescope sae bench``) writes one JSON per SAE and eval
in SAEBench's output schema (``schema``), plus a table and a plot comparing the SAEs.

Evals: ``core`` (``core``), ``sparse_probing`` (``sparse_probing``). SAEBench's scr, tpp, absorption,
autointerp and meta_structure are not built yet: asking for them is a one-line error.
"""

from __future__ import annotations

from saescope.lazy import lazy_getattr

_EXPORTS = {"bench_sae": "run", "EVALS": "run", "core_eval": "core", "sparse_probing_eval": "sparse_probing"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr("saescope.sae.bench", {name: f"saescope.sae.bench.{module}" for name, module in _EXPORTS.items()})
