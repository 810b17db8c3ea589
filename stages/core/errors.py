"""The one exception type for problems the user can fix (bad input, missing artifacts, bad options).

The command line turns it into a one-line message and exit code 2; anything else is an internal error.
"""


class UserError(Exception):
    """A problem with the user's input; the message names the file (or option) and what is wrong."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: libraries' own messages (torch's, h5py's) run to many."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].rstrip(" .:")
