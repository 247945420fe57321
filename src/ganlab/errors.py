"""The one exception type whose message is shown to the user as a single line (see cli.py)."""


class GanlabError(Exception):
    """Bad input or a refused action: the message names the file or key and says what to do."""


def first_line(exc: BaseException) -> str:
    """An exception's first message line for a one-line error; its type's name when it has no message (EOFError)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def error_summary(exc: BaseException) -> str:
    """`Type: first message line`, or `Type` alone when it has no message."""
    line = first_line(exc)
    return type(exc).__name__ if line == type(exc).__name__ else f"{type(exc).__name__}: {line}"
