"""The one exception type for errors a user can cause (bad input, bad config, missing weights offline)."""

__all__ = ["FaceZooError", "first_line"]


class FaceZooError(ValueError):
    """A problem with the user's input, stated in one line: what was wrong, where, and what to do.

    The CLI prints it without a traceback and exits non-zero. It subclasses ``ValueError`` so that code written
    against scikit-learn-style validation (``except ValueError``) keeps working.
    """


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when the message is empty): what a one-line error
    quotes of an exception raised by a library."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
