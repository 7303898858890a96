"""What a credential sends never ends up stored, whatever characters its secrets hold (issue 17, defect 2).

A run goes through the real worker to a destination that answers with every
header it received; the step's output, its attempt records and the API must
hold none of what the credential sent. Before the fix, a Basic password
beyond ASCII was sent latin-1 encoded while the scrubber looked for the UTF-8
encoding, so the encoded pair was stored for viewers to read.
"""

import base64

import pytest
from rest_framework.test import APIClient

from integrations.credential_kinds import spec_for
from integrations.services import credential_create, credential_reveal, credential_secret_values
from testing.network import RecordingHTTPServer, Reply, worker_network_guard_env
from testing.worker import wait_for_run
from workflows.models import StepAttempt
from workflows.services import run_accept, workflow_create

# (kind, fields, what must never be stored: the secrets and what goes on the wire for them)
CASES = [
    ("http_bearer", {"token": "tökën-ünïcödé-42"}, ["tökën-ünïcödé-42"]),
    ("http_basic", {"username": "jürgen", "password": "pässwörd-42"}, ["pässwörd-42"]),  # latin-1 on the wire
    ("http_basic", {"username": "Ἀθηνᾶ", "password": "пароль-секрет"}, ["пароль-секрет"]),  # UTF-8 on the wire
    ("http_header", {"header_name": "X-Api-Key", "value": "clé-secrète-42"}, ["clé-secrète-42"]),
]


@pytest.fixture(scope="module")
def echo():
    server = RecordingHTTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def celery_worker_env():
    env = worker_network_guard_env()
    env["POTAFLOW_ALLOW_PRIVATE_DESTINATIONS"] = "127.0.0.1"
    return env


def wire_forms(kind: str, fields: dict) -> list[str]:
    """What an HTTP client puts on the wire for these fields, computed here independently of the product."""
    if kind == "http_basic":
        text = f"{fields['username']}:{fields['password']}"
        try:
            raw = text.encode("latin-1")
        except UnicodeEncodeError:
            raw = text.encode()
        return [base64.b64encode(raw).decode()]
    return [fields.get("token") or fields["value"]]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "fields", "secrets"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_an_echoing_destination_gets_no_secret_of_any_kind_stored(
    celery_worker, echo, settings, fernet_keys, org, editor, kind, fields, secrets
):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    echo.reset()
    echo.route("POST", "/echo", lambda req: Reply(200, {"headers_you_sent": req.headers}))
    cred = credential_create(organization=org, name=kind, kind=kind, secret={**fields, "allowed_hosts": ["127.0.0.1"]})
    workflow = workflow_create(
        organization=org,
        name="Echo",
        steps=[
            {
                "key": "post",
                "action_type": "http.request",
                "config": {"method": "POST", "url": f"{echo.url}/echo", "body": {"n": 1}},
                "credential": cred.pk,
            }
        ],
    )
    run, _ = run_accept(workflow=workflow, trigger="manual", payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60)
    assert run.status == "succeeded", run.error
    sent = echo.requests[0].headers
    wire = wire_forms(kind, fields)
    # It was sent (the server decodes header bytes as latin-1, as HTTP/1.1 does)...
    assert any(form.encode().decode("latin-1") in value or form in value for form in wire for value in sent.values())
    # ...and nothing of it is stored: output, attempts, the API's run detail.
    step = run.step_runs.get()
    attempt = StepAttempt.objects.get(step_run=step)
    api = APIClient()
    api.force_authenticate(editor)
    stored = " ".join(
        [
            str(step.output),
            str(attempt.response_excerpt),
            str(attempt.request),
            api.get(f"/api/runs/{run.pk}/").content.decode("unicode_escape"),
        ]
    )
    assert "[redacted]" in str(step.output)
    for needle in [*secrets, *wire, *(form.encode().decode("latin-1") for form in wire)]:
        assert needle not in stored, needle


@pytest.mark.slow
def test_a_secret_no_http_header_can_carry_fails_the_step_naming_it(celery_worker, echo, settings, fernet_keys, org):
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = ["127.0.0.1"]
    echo.reset()
    cred = credential_create(
        organization=org, name="b", kind="http_bearer", secret={"token": "токен-42", "allowed_hosts": ["127.0.0.1"]}
    )
    step = {"key": "post", "action_type": "http.request", "config": {"method": "POST", "url": f"{echo.url}/echo"}}
    workflow = workflow_create(organization=org, name="Echo", steps=[{**step, "credential": cred.pk}])
    run, _ = run_accept(workflow=workflow, trigger="manual", payload={})
    run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=60)
    assert run.status == "failed" and echo.requests == []
    error = run.step_runs.get().error
    assert "token" in error and "ISO-8859-1" in error and "токен" not in error


@pytest.mark.django_db
@pytest.mark.parametrize(("kind", "fields", "secrets"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_the_scrubbed_values_are_the_header_values_the_kind_sends(fernet_keys, org, kind, fields, secrets):
    cred = credential_create(organization=org, name=kind, kind=kind, secret={**fields, "allowed_hosts": ["127.0.0.1"]})
    revealed = credential_reveal(cred)
    scrubbed = credential_secret_values(cred, revealed)
    for value in spec_for(kind).auth_headers(revealed).values():
        assert value.partition(" ")[2] in scrubbed or value in scrubbed
    assert set(wire_forms(kind, fields)) <= set(scrubbed)
