import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from .body_deadline import BodyDeadline

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "potaflow.settings")
django_application = get_wsgi_application()
# Slow clients must not hold a web thread: bodies arrive within a deadline or get a 408.
application = BodyDeadline(
    django_application,
    seconds=settings.POTAFLOW_WEB_BODY_TIMEOUT,
    max_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
    upload_seconds=settings.POTAFLOW_UPLOAD_BODY_TIMEOUT,
)
