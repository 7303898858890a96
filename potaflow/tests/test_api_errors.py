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


# Django refuses these bodies while parsing them, outside DRF: it used to answer with an HTML 400 page.
@pytest.mark.parametrize(
    ("body", "content_type", "status", "expected"),
    [
        (b"a=" + b"x" * 3_000_000, "application/x-www-form-urlencoded", 413, "Request body too large"),
        (b'{"email": "' + b"x" * 3_000_000 + b'"}', "application/json", 413, "Request body too large"),
        ("&".join(f"f{i}=1" for i in range(1500)).encode(), "application/x-www-form-urlencoded", 400, "too many"),
        (
            b'--xx\r\nContent-Disposition: form-data; name="a"\r\n\r\n' + b"x" * 3_000_000,
            "multipart/form-data; boundary=xx",
            413,
            "too large",
        ),
    ],
    ids=["form-too-large", "json-too-large", "too-many-fields", "multipart-too-large"],
)
def test_a_body_django_refuses_is_answered_in_the_error_shape(body, content_type, status, expected):
    response = APIClient().post("/api/auth/register/", body, content_type=content_type)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"detail", "errors"} and expected in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=xx"],
)
def test_multipart_garbage_is_a_json_400(content_type):
    response = APIClient().post("/api/auth/register/", b"\x00garbage\r\n--yy--", content_type=content_type)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "detail" in response.json()


def test_the_body_limit_is_a_setting(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = APIClient().post(
        "/api/auth/register/", b"a=" + b"x" * 2000, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large: the limit is 1000 bytes.", "errors": {}}


def test_outside_the_api_django_s_own_400_page_stays(client):
    response = client.post("/admin/login/", b"a=" + b"x" * 3_000_000, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


# Issue 17 (defect 7): every error carries `errors`, as the README promises, and DEBUG does not change the shape.
@pytest.mark.parametrize(
    ("method", "url", "headers"),
    [
        ("get", "/api/workflows/", {}),
        ("get", "/api/runs/", {"HTTP_AUTHORIZATION": "Bearer not-a-token"}),
        ("post", "/api/auth/token/refresh/", {}),
    ],
)
def test_a_401_has_the_errors_key_too(method, url, headers):
    response = getattr(APIClient(), method)(url, format="json", **headers)
    assert response.status_code in (400, 401)
    assert set(response.json()) == {"detail", "errors"}, response.json()
    if response.status_code == 401:
        assert response.json()["errors"] == {}


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize("path", ["/api/no-such-thing/", "/api/workflows/1/nope/", "/hooks/"])
def test_an_unknown_api_url_is_a_json_404_with_debug_on_or_off(settings, client, debug, path):
    settings.DEBUG = debug
    response = client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found.", "errors": {}}


def test_a_missing_trailing_slash_under_the_api_still_redirects(settings, client):
    settings.DEBUG = True
    response = client.get("/api/workflows")
    assert response.status_code == 301 and response["Location"] == "/api/workflows/"
