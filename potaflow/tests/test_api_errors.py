"""The API answers malformed bodies with a 400 in the one error shape, never a 500."""

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[" * 50_000, "nested too deeply"),
        ('{"email": "a@example.com", "password": NaN}', "JSON parse error"),
        ('{"email": ', "JSON parse error"),
    ],
)
def test_a_malformed_json_body_is_a_400_naming_the_problem(body, expected):
    response = APIClient().post("/api/auth/register/", body, content_type="application/json")
    assert response.status_code == 400
    assert expected in response.json()["detail"]
