"""``DebiasConfig``: how ``debias`` builds its candidates (light: the CLI imports it at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from saescope.bias.debias.registry import LEGACY_NAMES, method_names
from saescope.errors import SaescopeError


@dataclass
class DebiasConfig:
    """How ``debias`` builds its candidates (``saescope bias debias`` builds its options from these fields).

    Example: ``DebiasConfig(method="erase", layers=[12, 14])``. Lists are Python lists; the CLI parses
    ``--layers 12,14``. A comma-separated string is still accepted for the list fields."""

    method: str = "scrub"
    """ablate | auto | cap | cda | circuit | dama | erase | gender-vector | graph | leace | prompt | scrub | steer, or a
    method added with register_method (see bias.debias; auto compares the others on one table)."""
    features: str | list[int] = "auto"
    """'auto' (chosen on training prompts) or the feature ids."""
    strengths: list[float] | None = None
    """Candidate strengths: feature counts (ablate, cap), node counts (circuit), fractions of the centering
    coefficient (steer), erasure fractions (erase, leace) or fine-tuning steps (cda); default: the
    method's built-in grid."""
    hook: str | None = None
    """Hook point of the SAE; default: the one the SAE names."""
    layers: list[int] | None = None
    """erase, leace, gender-vector and cda: candidate layers (each at or after the SAE's layer); default: the SAE's
    layer and the next three even steps (+2, +4, +6). dama: the layers edited together (default: traced).
    scrub: the candidate last layers (each candidate erases at layers 0..last; default 40-80 % of the depth)."""
    suite: str = "default"
    """circuit only: the SAE suite the circuit is found over ('default' = the shipped one, or a folder)."""
    transcoders: str = "default"
    """graph only: the transcoder set whose features are attributed ('default' = the cached set that
    `saescope transcoders train` writes, or a folder)."""
    methods: list[str] | None = None
    """auto only: the methods compared; default every built-in one but circuit and graph (add them on request)."""
    vector: str | None = None
    """gender-vector only: a folder written by ``saescope bias gender-vector`` whose vector is erased;
    default: one built from a few ROME name edits."""
    preserve: list[str] | None = None
    """dama: the subjects whose gender the edit keeps (e.g. 'The baroness,Henry'); default: the
    selection prompts' definitional subjects and preserve lists. scrub: words its gate spares besides
    the shipped gendered lexicon."""

    def __post_init__(self) -> None:
        self.method = LEGACY_NAMES.get(self.method, self.method)
        if self.method not in method_names():
            raise SaescopeError(f"unknown debias method {self.method!r}: use one of {', '.join(method_names())}")
        if self.features != "auto":
            self.features = _numbers(self.features, "features", int)
            if not self.features:
                raise SaescopeError("features needs 'auto' or at least one feature id")
        if self.strengths is not None:
            self.strengths = _numbers(self.strengths, "strengths", float) or None
        if self.layers is not None:
            self.layers = _numbers(self.layers, "layers", int) or None
        if self.methods is not None:
            names = self.methods.split(",") if isinstance(self.methods, str) else self.methods
            self.methods = [LEGACY_NAMES.get(m.strip(), m.strip()) for m in names if m.strip()] or None
            unknown = [m for m in self.methods or [] if m not in method_names()]
            if unknown:
                raise SaescopeError(f"unknown debias method {unknown[0]!r} in methods: use {', '.join(method_names())}")
        if self.preserve is not None:
            names = self.preserve.split(",") if isinstance(self.preserve, str) else self.preserve
            self.preserve = [n.strip() for n in names if n.strip()]
            if not self.preserve:
                raise SaescopeError("preserve is empty: give at least one definitional subject, or leave it out")


def _numbers(value: object, what: str, kind: type) -> list:
    """A list of ``kind`` from a list or a comma-separated string; a one-line error naming ``what`` otherwise."""
    parts = str(value).split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    try:
        return [kind(part) for part in parts if str(part).strip()]
    except (TypeError, ValueError):
        raise SaescopeError(f"{what} must be numbers (a list, or comma-separated), got {value!r}") from None
