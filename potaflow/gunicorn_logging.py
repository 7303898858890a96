"""gunicorn's access log without capabilities in it.

``RedactingLogger`` writes ``/hooks/[redacted]`` instead of a webhook token
and ``[redacted]`` for the values of sensitive query parameters
(``POTAFLOW_REDACT_QUERY``), in every atom an access-log format may use that
holds a URL (request line, path, query, referer). Wired by ``logger_class``
in gunicorn.conf.py, which the Procfile, the Dockerfile and compose use.
"""

from typing import Any

from gunicorn.glogging import Logger

from potaflow.log_redaction import redact_url_text, sensitive_query_names


class RedactingLogger(Logger):
    """gunicorn's logger with webhook tokens and secret query values masked in the access log."""

    URL_ATOMS = ("r", "U", "q", "f", "{referer}i")

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        names = sensitive_query_names()
        for key in self.URL_ATOMS:
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_url_text(atoms[key], names)
        return atoms
