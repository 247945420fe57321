"""The one exception type whose message is shown to the user as a single line (see cli.py)."""


class GanlabError(Exception):
    """Bad input or a refused action: the message names the file or key and says what to do."""
