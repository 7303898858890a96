"""``GET /metrics``: the Prometheus text format (the figures are ``workflows.ops.metrics``).

With ``POTAFLOW_METRICS_TOKEN`` set, a scrape must send
``Authorization: Bearer <token>`` (compared in constant time); anything else
is a 401 that reveals nothing. Without a token the endpoint is open only when
``POTAFLOW_METRICS_ALLOW_OPEN`` says so (its default is ``DEBUG``: open in
development; in production set it only when nothing but the monitoring
network reaches the port): a production process started without a token
refuses (403 naming both settings) rather than show platform-wide counters
to anyone.
"""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from workflows.ops.metrics import scrape_registry


def _authorized(request: HttpRequest) -> bool:
    token = settings.POTAFLOW_METRICS_TOKEN
    if not token:
        return True
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


def open_without_token_refused() -> bool:
    """Production (DEBUG off), no token and no explicit permission: /metrics stays closed."""
    return not settings.POTAFLOW_METRICS_TOKEN and not settings.POTAFLOW_METRICS_ALLOW_OPEN


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if open_without_token_refused():
        return HttpResponse(
            "Forbidden: /metrics is closed in production without a token. Set POTAFLOW_METRICS_TOKEN (scrapes "
            "send Authorization: Bearer <token>) or POTAFLOW_METRICS_ALLOW_OPEN=true when only your monitoring "
            "reaches it.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    if not _authorized(request):
        response = HttpResponse("Unauthorized: send Authorization: Bearer <POTAFLOW_METRICS_TOKEN>.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
