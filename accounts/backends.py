"""The authentication backend: Django's, behind the login throttle."""

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest

from . import login_throttle
from .models import User


class ThrottledModelBackend(ModelBackend):
    """Email + password, refused with ``LoginThrottled`` once the address or account failed too often.

    Both the API login (simplejwt) and the admin login call ``authenticate()``
    with the request, so one policy covers both. Calls without a request
    (management commands, ``Client.login`` in tests) are not throttled.
    """

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> User | None:
        if username is None:
            username = kwargs.get(User.USERNAME_FIELD)
        if request is None or username is None or password is None:
            return super().authenticate(request, username=username, password=password, **kwargs)
        login_throttle.login_guard(request=request, email=username)
        user = super().authenticate(request, username=username, password=password)
        login_throttle.login_record(request=request, email=username, succeeded=user is not None)
        return user

    def user_can_authenticate(self, user: Any) -> bool:
        """Active, and its address verified: an account nobody confirmed cannot sign in (web, API, admin)."""
        return super().user_can_authenticate(user) and getattr(user, "email_verified_at", None) is not None
