"""The one error type for mistakes a user can make (bad file, bad column, bad flag...).

The CLI turns a `TunelabError` into one line on stderr and exit code 2; anything else is a
bug and keeps its traceback.
"""


class TunelabError(Exception):
    """A user-caused problem. The message says what was wrong and how to fix it, in one line."""
