"""The one exception type for bad input, shared by `graphs` and `toolchain`.

The CLI turns it into a one-line message and exit code 2; anything else is a bug and keeps its
traceback.
"""


class InputError(Exception):
    """The user's input (file, plan, spec, option) is wrong; the message names the problem."""
