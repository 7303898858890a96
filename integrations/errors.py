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
"""

from integrations.storable import clean_text


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
    def __init__(self, output: dict) -> None:
        super().__init__("filtered")
        self.output = output


class ConfigError(ValueError):
    """An invalid step config; ``field`` is the config key (dotted path) at fault."""

    def __init__(self, message: str, field: str = "config") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
