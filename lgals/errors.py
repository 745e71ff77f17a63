"""Errors meant for the user: the CLI prints their message as one line and exits with the code."""

import errno


class LgalsError(Exception):
    exit_code = 1


class BadSetting(LgalsError):
    """A setting contradicts stored state (e.g. resuming a study made with other settings)."""

    exit_code = 2


class TrackingUnavailable(LgalsError):
    """The tracking store cannot be reached."""


class AllTrialsFailed(LgalsError):
    """No trial of a study completed: there are no best params to report."""


class NoSpaceLeft(LgalsError):
    """The disk (or the store's database) is full."""

    def __init__(self, what: str):
        super().__init__(f"no space left on device while {what}: free some space and run "
                         "again (runs left RUNNING end FAILED at the next command)")


def out_of_space(error: BaseException) -> bool:
    """Whether ``error``, or an error that led to it, is a full disk: an ``OSError`` ENOSPC, or
    the message SQLite and the MLflow writer pass on for one."""
    markers = ("No space left on device", "database or disk is full")
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if any(marker in str(error) for marker in markers):
            return True
        error = error.__cause__ or error.__context__
    return False
