"""Login, register, refresh and logout are throttled per client: a 429 with Retry-After."""

import pytest
from django.conf import settings
from django.test import override_settings

pytestmark = pytest.mark.django_db


def low_rate(rate: str = "2/min"):
    return override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"auth": rate}})


@pytest.mark.parametrize(
    ("url", "payload"),
    [
        ("/api/auth/token/", {"email": "who@example.com", "password": "wrong-password-1"}),
        ("/api/auth/register/", {"email": "not-an-email", "password": "x", "organization": "O"}),
        ("/api/auth/token/refresh/", {"refresh": "garbage"}),
        ("/api/auth/logout/", {"refresh": "garbage"}),
    ],
)
def test_the_third_call_within_the_window_is_429_with_retry_after(api, url, payload):
    with low_rate():
        statuses = [api.post(url, payload, format="json").status_code for _ in range(2)]
        assert 429 not in statuses
        throttled = api.post(url, payload, format="json")
    assert throttled.status_code == 429
    assert 0 < int(throttled["Retry-After"]) <= 60
    assert throttled.json()["detail"].startswith("Request was throttled.")


def test_each_endpoint_has_its_own_bucket(api):
    with low_rate("1/min"):
        assert api.post("/api/auth/token/", {"email": "a@example.com", "password": "p"}).status_code == 401
        assert api.post("/api/auth/token/", {"email": "a@example.com", "password": "p"}).status_code == 429
        assert api.post("/api/auth/token/refresh/", {"refresh": "garbage"}).status_code == 401


def test_clients_are_told_apart_by_address(api):
    with low_rate("1/min"):
        payload = {"email": "a@example.com", "password": "p"}
        assert api.post("/api/auth/token/", payload, REMOTE_ADDR="127.0.0.10").status_code == 401
        assert api.post("/api/auth/token/", payload, REMOTE_ADDR="127.0.0.10").status_code == 429
        assert api.post("/api/auth/token/", payload, REMOTE_ADDR="127.0.0.11").status_code == 401


def test_authenticated_endpoints_are_not_throttled_by_the_auth_rate(world):
    client = world.client("viewer")
    with low_rate("1/min"):
        assert all(client.get("/api/me/").status_code == 200 for _ in range(3))
