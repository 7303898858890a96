"""``GET /metrics``: the Prometheus text format (the figures are ``workflows.ops.metrics``).

With ``POTAFLOW_METRICS_TOKEN`` set, a scrape must send
``Authorization: Bearer <token>`` (compared in constant time); anything else
is a 401 that reveals nothing. Without it the endpoint is open, as in
development: set it in production.
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


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not _authorized(request):
        response = HttpResponse("Unauthorized: send Authorization: Bearer <POTAFLOW_METRICS_TOKEN>.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
