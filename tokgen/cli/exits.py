"""The exit statuses of every ``tokgen`` command, in one table (README "Exit status").

Scripts and orchestrators act on the status alone: retry later (3, 4), fix the request
(2), fix the credentials (6), give up on the id (5), report a bug (1). So each cause has
one status, the same in every command, and a server's answer maps to the status of its
cause, whichever ``tokgen client`` or ``tokgen jobs`` command got it.
"""

from __future__ import annotations

from enum import IntEnum

from tokgen.errors import ServerError, TokgenError


class Exit(IntEnum):
    OK = 0
    # Something tokgen did not expect: a bug here (one line; the traceback under
    # --log-level debug), or the server failed (INTERNAL, UNKNOWN, UNIMPLEMENTED, ...).
    INTERNAL = 1
    # `tokgen health`: the service is not SERVING, or nothing answers. The same value as
    # INTERNAL on purpose: Docker's HEALTHCHECK reads 1 as unhealthy and reserves 2.
    NOT_SERVING = 1
    # Bad usage (argparse's own status) or bad input: unreadable or unsupported audio,
    # bad codes, a bad option or setting, or the server refused the request as invalid.
    USAGE = 2
    # The server could not be reached or did not answer in time: nothing listening
    # (connection refused), not ready yet, shutting down, or past --timeout. Retry later.
    UNAVAILABLE = 3
    # The server refused for now: admission slots full, the job queue full, or this API
    # key's job quota reached (RESOURCE_EXHAUSTED). Retry later, or with fewer jobs.
    EXHAUSTED = 4
    # No such job (or its result has expired).
    NOT_FOUND = 5
    # No valid API key, or the key may not do this (UNAUTHENTICATED, PERMISSION_DENIED).
    DENIED = 6
    # Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
    INTERRUPTED = 130


# A server's gRPC status (by name) -> the exit status of the command that got it; any
# other status is INTERNAL.
SERVER_STATUS: dict[str, Exit] = {
    "INVALID_ARGUMENT": Exit.USAGE,
    "OUT_OF_RANGE": Exit.USAGE,
    "FAILED_PRECONDITION": Exit.USAGE,  # e.g. fetching a job that has not succeeded
    "ALREADY_EXISTS": Exit.USAGE,  # an idempotency key reused for another request
    "UNAVAILABLE": Exit.UNAVAILABLE,
    "DEADLINE_EXCEEDED": Exit.UNAVAILABLE,
    "CANCELLED": Exit.UNAVAILABLE,  # the server cut the call (shutdown past its grace period)
    "RESOURCE_EXHAUSTED": Exit.EXHAUSTED,
    "NOT_FOUND": Exit.NOT_FOUND,
    "UNAUTHENTICATED": Exit.DENIED,
    "PERMISSION_DENIED": Exit.DENIED,
}


def exit_status(error: TokgenError) -> Exit:
    """The status a command that failed with ``error`` exits with."""
    if isinstance(error, ServerError):
        return SERVER_STATUS.get(error.status, Exit.INTERNAL)
    return Exit.USAGE
