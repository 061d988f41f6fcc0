"""Model editing: causal tracing (Meng et al. 2022), ROME rank-one edits of an MLP output projection
(r-ROME update by default, many requests in one batch), the FT-L baseline, key statistics cached per
(model, layer), ``WeightEdit`` values that patch weights inside a ``with`` block and restore them
exactly (the gender-vector study built on them lives in ``saescope.bias.gender_vector``).

Example::

    import saescope
    from saescope.editing import EditRequest, RomeConfig, rome_edit
    lm = saescope.load_model()
    edit = rome_edit(lm, EditRequest("Name: {}. Gender:", "Ben", " Female"), RomeConfig(layer=6))
    with edit.apply(lm):
        ...                                   # "Name: Ben. Gender:" -> " Female"
    edit.save("edits/ben")

Names are imported lazily (nothing heavy loads with the package)."""

from __future__ import annotations

from saescope.lazy import lazy_getattr

_EXPORTS = {"EditRequest": "request", "locate_subject": "request", "RomeConfig": "config", "rome_edit": "rome",
            "rome_edits": "rome", "value_edit": "rome", "subject_update": "rome", "SubjectUpdate": "rome",
            "ft_l_edit": "fine_tune", "WeightEdit": "weight_edit", "load_edit": "weight_edit",
            "apply_all": "weight_edit", "key_second_moment": "statistics", "causal_trace": "tracing",
            "TraceResult": "tracing", "edit_scores": "evaluation", "load_applicable": "weight_edit"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr("saescope.editing", {name: f"saescope.editing.{module}" for name, module in _EXPORTS.items()})
