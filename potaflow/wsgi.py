import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from .body_deadline import BodyDeadline

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "potaflow.settings")
django_application = get_wsgi_application()
# Load the URLs (and the admin, the API they import) now, in every web worker as it boots, rather than in
# whichever request comes first: a worker's first answer, /healthz included, is as fast as the others.
get_resolver().url_patterns  # noqa: B018 - evaluated for its side effect
# Slow clients must not hold a web thread: bodies arrive within a deadline or get a 408.
application = BodyDeadline(
    django_application,
    seconds=settings.POTAFLOW_WEB_BODY_TIMEOUT,
    max_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
    upload_seconds=settings.POTAFLOW_UPLOAD_BODY_TIMEOUT,
)
