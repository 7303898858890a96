"""The admin login under the same throttle as the API login (``accounts.login_throttle``)."""

from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

from .login_throttle import LoginThrottled


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """Django's admin login form; a throttled attempt is a form error naming the wait."""

    def clean(self) -> dict[str, Any]:
        try:
            return super().clean()
        except LoginThrottled as exc:
            if self.request is not None:  # the admin's login view always passes it
                # ``login`` reads it for the status.
                self.request.potaflow_login_wait = exc.wait  # type: ignore[attr-defined]  # ad-hoc, not declared
            raise ValidationError(str(exc), code="throttled") from exc


def login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """``admin.site.login``, answering a throttled attempt with 429 and ``Retry-After``."""
    response = admin.site.login(request, extra_context)
    wait = getattr(request, "potaflow_login_wait", None)
    if wait is not None:
        response.status_code = 429
        response["Retry-After"] = str(wait)
    return response
