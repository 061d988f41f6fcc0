"""The one exception type for problems a user can fix; the CLI prints its message on one line."""


class SaescopeError(Exception):
    """A user-facing error: bad input, missing file, wrong shape. The message says what to do."""
