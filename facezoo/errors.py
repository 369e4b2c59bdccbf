"""The one exception type for errors a user can cause (bad input, bad config, missing weights offline)."""

__all__ = ["FaceZooError"]


class FaceZooError(ValueError):
    """A problem with the user's input, stated in one line: what was wrong, where, and what to do.

    The CLI prints it without a traceback and exits non-zero. It subclasses ``ValueError`` so that code written
    against scikit-learn-style validation (``except ValueError``) keeps working.
    """
