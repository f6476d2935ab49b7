"""The one exception type for bad input from a person (CLI flags, data files, configs, run folders).

The CLI turns an :class:`InputError` into a one-line message and exit status 2; anything else is a bug and keeps
its traceback.
"""


class InputError(ValueError):
    """Bad input from the user. The message names the offending value and what was expected."""
