"""The one exception type for problems a user can fix; the CLI prints its message on one line."""


class SaescopeError(Exception):
    """A user-facing error: bad input, missing file, wrong shape. The message says what to do.
    ``exit_code`` (default 2) is what the CLI exits with; an empty message prints nothing (the error
    was already shown, e.g. by the worker processes of ``--workers``)."""

    exit_code = 2

    def __init__(self, message: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


def check_text(text: str, what: str = "prompt") -> str:
    """``text`` if it holds some characters and is valid Unicode (command-line arguments with bytes
    that are not UTF-8 arrive as lone surrogates); else a ``SaescopeError`` saying which."""
    if not isinstance(text, str) or not text.strip():
        raise SaescopeError(f"empty {what}: give some text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SaescopeError(f"the {what} holds bytes that are not UTF-8 (at character {exc.start}): "
                            "give UTF-8 text") from None
    return text


class JobInterrupted(SaescopeError):
    """A long job stopped by the user (Ctrl-C) after saving its checkpoint; the CLI exits with 130."""

    exit_code = 130
