"""An edit request (``prompt`` with ``{}`` for the subject, the subject, the new target) and where the
subject's tokens are in a tokenized prompt."""

from __future__ import annotations

from dataclasses import dataclass

from saescope.errors import SaescopeError


@dataclass(frozen=True)
class EditRequest:
    """``EditRequest("Name: {}. Gender:", "Ben", " Female")``: make the prompt about ``subject`` continue
    with ``target`` (its leading space matters, as in the tokenizer)."""

    prompt: str
    subject: str
    target: str

    def __post_init__(self) -> None:
        check_template(self.prompt, "prompt")
        if not self.subject.strip():
            raise SaescopeError("the subject is empty: give the words the fact is about")
        if not self.target.strip():
            raise SaescopeError("the target is empty: give the new completion, e.g. ' Female'")

    @property
    def text(self) -> str:
        return fill_subject(self.prompt, self.subject)

    def to_dict(self) -> dict[str, str]:
        return {"prompt": self.prompt, "subject": self.subject, "target": self.target}


def check_template(template: str, what: str = "prompt") -> str:
    """``template`` if it holds the subject's place as ``{}`` exactly once; other braces are plain text."""
    if template.count("{}") != 1:
        raise SaescopeError(f"the {what} must hold the subject's place as {{}} exactly once, got {template!r}")
    return template


def fill_subject(template: str, subject: str, what: str = "prompt") -> str:
    """``template`` with its one ``{}`` replaced by ``subject``. Not ``str.format``: ``"Gender {M/F}: {}"`` or
    ``"{0.__class__}"`` are text here, never fields to look up."""
    return check_template(template, what).replace("{}", subject, 1)


def locate_subject(tokenizer: object, text: str, subject: str, prefix: str = "") -> tuple[list[int], list[int]]:
    """``(token ids of prefix + text, indices of the subject's tokens)``, the subject being its last
    occurrence in ``text``. Needs a fast tokenizer (character offsets). Raises ``SaescopeError``."""
    start = text.rfind(subject)
    if start < 0 or not subject:
        raise SaescopeError(f"the subject {subject!r} does not occur in the prompt {text!r}")
    full = prefix + text
    start, end = len(prefix) + start, len(prefix) + start + len(subject)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    positions = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if a < end and b > start]
    if not positions:
        raise SaescopeError(f"the subject {subject!r} has no tokens of its own in {text!r}")
    return list(encoded["input_ids"]), positions
