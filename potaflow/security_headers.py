"""Content-Security-Policy on every response, and ``Cache-Control: no-store`` on API answers.

Every page PotaFlow serves (the admin, the live run view, the API docs) loads
its scripts and styles from our own static files, so the policy can be strict:
nothing from other origins, no ``eval``, no inline event handlers or style
attributes. The few inline ``<script>``/``<style>`` blocks in our templates
carry the per-request nonce (``{{ request.csp_nonce }}``); any other inline
code, e.g. injected markup, does not run.

API and webhook answers and the member pages (``/app/``) carry tokens,
secrets' metadata and run data: no browser or intermediary cache may keep them.
"""

import secrets
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

# Member pages show run data and webhook URLs to whoever is signed in: not for a shared cache or the back button.
NO_STORE_PREFIXES = ("/api/", "/hooks/", "/app/")


def content_security_policy(nonce: str) -> str:
    """The policy for one response; ``data:`` images are the icons Swagger UI and the admin inline."""
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' 'nonce-{nonce}'",
            f"style-src 'self' 'nonce-{nonce}'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeadersMiddleware:
    """Adds the CSP (with a fresh nonce per request) and, for the API and member pages, ``Cache-Control: no-store``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        nonce = secrets.token_urlsafe(18)
        # An attribute of our own on the request, read by the templates as {{ request.csp_nonce }}.
        request.csp_nonce = nonce  # type: ignore[attr-defined]
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", content_security_policy(nonce))
        if request.path.startswith(NO_STORE_PREFIXES):
            response["Cache-Control"] = "no-store"
        return response
