"""How an action tells the engine what went wrong; the engine decides what follows.

- ``RetryableError``: transient (timeout, connection error, 5xx, 429). The
  step is retried with backoff; ``retry_after`` (seconds) from the service
  wins over the computed delay.
- ``PermanentError``: retrying cannot help (4xx, bad config, template error).
  The step fails at once.
- ``RunFiltered``: not an error; a ``filter`` step ends the run as ``filtered``.
- ``ConfigError``: a step definition is invalid; raised when a workflow is
  saved, never at run time.

Messages often quote a server's answer; they are cleaned (no NUL, no lone
surrogates) so that they can always be stored.

Which answers are transient is decided here, once, for every action:
``is_retryable_status`` (429 and 5xx), ``parse_retry_after`` (the
``Retry-After`` header), ``from_status`` (an HTTP answer that is not a
success) and ``from_resolution`` (DNS said "try again" or "no such name").
"""

import email.utils
import time

from integrations.storable import JSONValue, clean_text


class ActionError(Exception):
    """``status``: the destination's answer (an HTTP status) when there was one, for the attempt record."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        message = clean_text(str(message))
        super().__init__(message)
        self.message = message
        self.status = status


class RetryableError(ActionError):
    def __init__(self, message: str, retry_after: float | None = None, *, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PermanentError(ActionError):
    pass


class RunFiltered(Exception):  # noqa: N818 - a signal, not an error
    def __init__(self, output: dict[str, JSONValue]) -> None:
        super().__init__("filtered")
        self.output = output


class ConfigError(ValueError):
    """An invalid step config; ``field`` is the config key (dotted path) at fault."""

    def __init__(self, message: str, field: str = "config") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def is_retryable_status(status: int) -> bool:
    """429 (rate limited) and every 5xx are transient; other 4xx are not."""
    return status == 429 or status >= 500


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def from_status(status: int, message: str, *, retry_after: float | None = None) -> ActionError:
    """The error for an HTTP answer that is not a success: retryable for 429/5xx, else permanent."""
    if is_retryable_status(status):
        return RetryableError(message, retry_after=retry_after, status=status)
    return PermanentError(message, status=status)


def from_resolution(message: str, *, temporary: bool) -> ActionError:
    """A host name that did not resolve: retryable only when DNS said "try again"."""
    return (RetryableError if temporary else PermanentError)(message)
