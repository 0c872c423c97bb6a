"""The one exception type a user sees.

Every check of user input raises :class:`FmnumpyError` with a message that says
what is wrong and what to do; the command line prints that message on one line
and exits with a non-zero code instead of showing a traceback.
"""


class FmnumpyError(ValueError):
    """Bad input or an unusable file: the message is meant for the user."""
