"""Errors meant for the user: the CLI prints their message as one line and exits with the code."""


class LgalsError(Exception):
    exit_code = 1


class BadSetting(LgalsError):
    """A setting contradicts stored state (e.g. resuming a study made with other settings)."""

    exit_code = 2


class TrackingUnavailable(LgalsError):
    """The tracking store cannot be reached."""


class AllTrialsFailed(LgalsError):
    """No trial of a study completed: there are no best params to report."""
