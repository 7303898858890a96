"""What the web server glue tells the application about a request body it was reading.

``potaflow.body_deadline`` gives a body read as the application goes (an
upload streamed to file storage, a chunked body) a deadline; when it passes,
reading ends early (as if the client had stopped) and the WSGI environ
(``request.META``) carries ``BODY_EXPIRED``, so the view can answer 408 naming
the setting instead of treating a cut body as a whole one.
"""

BODY_EXPIRED = "potaflow.body_expired"


def body_expired(meta: dict) -> bool:
    """True when the request's body stopped arriving at its deadline (what was read is cut short)."""
    return bool(meta.get(BODY_EXPIRED))
