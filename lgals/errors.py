"""Errors meant for the user: the CLI prints their message as one line and exits with the code.

Also what keeps passwords out of every line lgals prints or records: :func:`redact_url` and
:func:`redact`.
"""

import errno
import os
import re
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit


class LgalsError(Exception):
    exit_code = 1


class BadSetting(LgalsError):
    """A setting contradicts stored state (e.g. resuming a study made with other settings)."""

    exit_code = 2


class TrackingUnavailable(LgalsError):
    """The tracking store cannot be reached."""


class NotAuthorised(TrackingUnavailable):
    """The tracking server refused the credentials (HTTP 401) or the request (HTTP 403)."""


class AllTrialsFailed(LgalsError):
    """No trial of a study completed: there are no best params to report."""


class NoSpaceLeft(LgalsError):
    """The disk (or the store's database) is full."""

    def __init__(self, what: str):
        super().__init__(f"no space left on device while {what}: free some space and run "
                         "again (runs left RUNNING end FAILED at the next command)")


def causes(error: BaseException | None) -> Iterator[BaseException]:
    """``error``, then the errors that led to it (``raise ... from``, or raised while handling
    one), each once."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def out_of_space(error: BaseException) -> bool:
    """Whether ``error``, or an error that led to it, is a full disk: an ``OSError`` ENOSPC, or
    the message SQLite and the MLflow writer pass on for one."""
    markers = ("No space left on device", "database or disk is full")
    return any((isinstance(cause, OSError) and cause.errno == errno.ENOSPC)
               or any(marker in str(cause) for marker in markers) for cause in causes(error))


# Query parameters whose value is a secret (libpq's password and sslpassword, tokens, keys).
_SECRET_PARAM = re.compile(
    r"(?i)((?:^|[?&;])[^=&;#?]*(?:pass|pwd|secret|token|api_?key|access_?key)[^=&;#]*=)"
    r"[^&;#]*")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
# Environment variables that hold a secret lgals or MLflow use.
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
MASK = "***"


def redact_url(url: str) -> str:
    """``url`` fit to record or print: the password of its user info masked
    (``postgresql://user:***@host/db``, ``http://user:***@host``; percent-encoded or not),
    and so is the value of each query parameter named like a secret (``?password=***``,
    ``sslpassword``, ``token``, ``api_key``). Anything else (user, host, port, path) stays.

    Passwords the URL parsers disagree on are masked in full: one with an unencoded ``@``
    (``u:p@ss@host``: up to the last ``@`` before the path) or ``/``, ``?``, ``#``
    (``u:pa/ss@host``: up to the first ``@`` after them).
    """
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url
    head, rest = url[:scheme_end + 3], url[scheme_end + 3:]
    first_at = rest.find("@")
    if first_at > 0 and not rest.startswith("/"):
        after = re.search(r"[/?#]", rest[first_at:])
        end = first_at + after.start() if after else len(rest)
        at = rest.rfind("@", 0, end)
        user, colon, _ = rest[:at].partition(":")
        if colon:
            head += f"{user}:{MASK}@"
            rest = rest[at + 1:]
    query = re.search(r"[?#]", rest)
    if query:
        rest = rest[:query.start()] + _SECRET_PARAM.sub(rf"\1{MASK}", rest[query.start():])
    return head + rest


_SECRETS: set[str] = set()


def keep_secret(url: str) -> None:
    """Remember the password of ``url`` (a storage or tracking URL), so that :func:`redact`
    masks it wherever it turns up, even outside a URL."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        _SECRETS.update({password, unquote(password)})


def redact(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`), and every known secret
    masked: the passwords :func:`keep_secret` was given and MLflow's credential variables
    (:data:`SECRET_VARIABLES`); those of fewer than 4 characters only inside URLs."""
    text = _URL.sub(lambda match: redact_url(match.group()), text)
    secrets = _SECRETS | {os.environ.get(name, "") for name in SECRET_VARIABLES}
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
