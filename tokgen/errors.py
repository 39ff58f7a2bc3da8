"""User-facing errors.

Every public entry point turns bad input into a ``TokgenError`` whose message names the
problem and what to do about it; the CLI prints the message and exits with status 2
instead of showing a stack trace from deep inside torch or libsndfile (a ``ServerError``:
with the status of the server's answer, ``tokgen.cli.exits``).
"""


class TokgenError(Exception):
    """An error caused by the user's input or environment, with an actionable message."""


class AudioError(TokgenError):
    """Audio that cannot be read, is empty or silent, or has an unsupported format or shape."""


class CheckpointError(TokgenError):
    """A model checkpoint that is missing, malformed or does not match its config."""


class ServerError(TokgenError):
    """A call that the server answered with an error status. ``status`` is the gRPC code's
    name (``UNAVAILABLE``, ``NOT_FOUND``, ...): the command line exits with the status of
    its cause (``tokgen.cli.exits``)."""

    def __init__(self, message: str, status: str):
        super().__init__(message)
        self.status = status
