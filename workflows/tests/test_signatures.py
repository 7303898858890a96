"""Signature presets: every scheme is exercised with the sender's own signing code
(standardwebhooks, stripe, slack_sdk) or the sender's documented example (GitHub)."""

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
import stripe
from django.test import Client
from rest_framework.test import APIClient
from slack_sdk.signature import SignatureVerifier
from standardwebhooks.webhooks import Webhook

from workflows.models import Run, TriggerType
from workflows.services import WorkflowInvalid, workflow_create, workflow_update

pytestmark = pytest.mark.django_db

STEPS = [{"key": "t", "action_type": "transform", "config": {"value": "{{ trigger.body }}"}}]
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def make(org, scheme, secret, **fields):
    return workflow_create(
        organization=org,
        name=f"Signed {scheme}",
        trigger_type=TriggerType.WEBHOOK,
        webhook_secret=secret,
        signature_scheme=scheme,
        steps=STEPS,
        **fields,
    )


def post(wf, body, headers, content_type="application/json"):
    return Client().post(f"/hooks/{wf.webhook_token}", data=body, content_type=content_type, headers=headers)


def test_github_documented_example_vector_is_accepted(org):
    wf = make(org, "github", GITHUB_SECRET)
    ok = post(wf, GITHUB_BODY, {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": "d-1"}, "text/plain")
    assert ok.status_code == 202, ok.json()
    assert Run.objects.get().payload["body"] == "Hello, World!"
    assert Run.objects.get().payload["headers"]["x-hub-signature-256"] == "[redacted]"


def test_github_replay_with_another_delivery_id_is_the_same_event(org):
    wf = make(org, "github", GITHUB_SECRET)
    first = post(wf, GITHUB_BODY, {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": "d-1"}, "text/plain")
    again = post(
        wf,
        GITHUB_BODY,
        {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": "d-2", "Idempotency-Key": "fresh"},
        "text/plain",
    )
    assert first.status_code == 202 and again.status_code == 200
    assert Run.objects.count() == 1


def test_github_bad_or_missing_signature_is_401_naming_the_check(org):
    wf = make(org, "github", GITHUB_SECRET)
    tampered = post(wf, b"Hello, World?", {"X-Hub-Signature-256": GITHUB_SIGNATURE}, "text/plain")
    assert tampered.status_code == 401
    assert tampered.json()["detail"] == (
        "Invalid webhook signature (github): X-Hub-Signature-256 does not match the body."
    )
    missing = post(wf, GITHUB_BODY, {}, "text/plain")
    assert missing.status_code == 401 and "the X-Hub-Signature-256 header is missing" in missing.json()["detail"]
    assert Run.objects.count() == 0


def test_stripe_signature_from_stripes_own_helper_is_accepted(org):
    secret = "whsec_stripe_test_secret_0123456789"
    wf = make(org, "stripe", secret)
    body = '{"id": "evt_1", "type": "invoice.paid"}'
    header = stripe.WebhookSignature.generate_signature_header(body, secret)
    ok = post(wf, body, {"Stripe-Signature": header})
    assert ok.status_code == 202, ok.json()
    # What stripe's own verifier accepts, PotaFlow accepts: the same header verifies there too.
    assert stripe.WebhookSignature.verify_header(body, header, secret, tolerance=300)


def test_stripe_outside_the_5_minute_tolerance_or_tampered_is_401(org):
    secret = "whsec_stripe_test_secret_0123456789"
    wf = make(org, "stripe", secret)
    body = '{"id": "evt_2"}'
    old = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=int(time.time()) - 301)
    stale = post(wf, body, {"Stripe-Signature": old})
    assert stale.status_code == 401 and "300 s away from the server time" in stale.json()["detail"]
    fresh = stripe.WebhookSignature.generate_signature_header(body, secret)
    tampered = post(wf, '{"id": "evt_3"}', {"Stripe-Signature": fresh})
    assert tampered.status_code == 401 and "no v1 signature matches" in tampered.json()["detail"]
    assert Run.objects.count() == 0


def test_slack_signature_from_slack_sdk_is_accepted(org):
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    wf = make(org, "slack", secret)
    body = "token=xyz&team_id=T1&command=%2Fweather&text=94070"
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}
    ok = post(wf, body, headers, "application/x-www-form-urlencoded")
    assert ok.status_code == 202, ok.json()
    assert Run.objects.get().payload["body"]["text"] == "94070"
    stale_ts = str(int(time.time()) - 600)
    stale = {
        "X-Slack-Request-Timestamp": stale_ts,
        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=stale_ts, body=body),
    }
    refused = post(wf, body, stale, "application/x-www-form-urlencoded")
    assert refused.status_code == 401 and "X-Slack-Request-Timestamp" in refused.json()["detail"]


def test_standard_webhooks_signature_from_the_reference_library_is_accepted(org):
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    wf = make(org, "standard", secret)
    body = '{"type": "user.created"}'
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": Webhook(secret).sign("msg_1", datetime.now(tz=UTC), body),
    }
    assert post(wf, body, headers).status_code == 202


@pytest.mark.parametrize(
    ("algorithm", "encoding", "prefix", "digest"),
    [
        ("sha256", "base64", "", lambda key, body: base64.b64encode(hmac.new(key, body, hashlib.sha256).digest())),
        ("sha1", "hex", "sha1=", lambda key, body: hmac.new(key, body, hashlib.sha1).hexdigest().encode()),
        ("sha256", "hex", "", lambda key, body: hmac.new(key, body, hashlib.sha256).hexdigest().encode()),
    ],
)
def test_generic_hmac_header(org, algorithm, encoding, prefix, digest):
    secret = "generic-secret-0123456789"
    wf = make(
        org, "hmac", secret, hmac_header="X-Shop-Hmac", hmac_algorithm=algorithm, hmac_encoding=encoding,
        hmac_prefix=prefix,
    )  # fmt: skip
    body = b'{"order": 7}'
    value = prefix + digest(secret.encode(), body).decode()
    assert post(wf, body, {"X-Shop-Hmac": value}).status_code == 202
    wrong = prefix + digest(b"another-secret-000000", body).decode()
    refused = post(wf, body, {"X-Shop-Hmac": wrong})
    assert refused.status_code == 401 and "X-Shop-Hmac does not match the body" in refused.json()["detail"]


def test_two_secrets_are_active_during_a_rotation(org):
    wf = make(org, "github", "new-secret-0123456789")
    workflow_update(workflow=wf, webhook_secret_previous=GITHUB_SECRET)
    # A sender still on the old secret (GitHub's example vector) gets through...
    assert post(wf, GITHUB_BODY, {"X-Hub-Signature-256": GITHUB_SIGNATURE}, "text/plain").status_code == 202
    # ...and so does one on the new secret.
    body = b"Hello again"
    new_sig = "sha256=" + hmac.new(b"new-secret-0123456789", body, hashlib.sha256).hexdigest()
    assert post(wf, body, {"X-Hub-Signature-256": new_sig}, "text/plain").status_code == 202
    # Rotation finished: the old one stops working.
    workflow_update(workflow=wf, webhook_secret_previous="")
    again = post(wf, b"Hello, World! (2)", {"X-Hub-Signature-256": GITHUB_SIGNATURE}, "text/plain")
    assert again.status_code == 401


def test_invalid_signing_configurations_name_the_field(org):
    with pytest.raises(WorkflowInvalid) as hmac_without_header:
        make(org, "hmac", "generic-secret-0123456789")
    assert "hmac_header" in hmac_without_header.value.errors
    with pytest.raises(WorkflowInvalid) as underscore:  # servers drop such headers: it would never arrive
        make(org, "hmac", "generic-secret-0123456789", hmac_header="X_Signature")
    assert "only letters, digits and '-'" in underscore.value.errors["hmac_header"][0]
    with pytest.raises(WorkflowInvalid) as short_previous:
        make(org, "github", GITHUB_SECRET, webhook_secret_previous="short")
    assert "webhook_secret_previous" in short_previous.value.errors


def test_the_api_exposes_the_scheme_and_keeps_secrets_write_only(org, editor):
    client = APIClient()
    client.force_authenticate(editor)
    body = {
        "name": "Shop",
        "trigger_type": "webhook",
        "webhook_secret": "generic-secret-0123456789",
        "webhook_secret_previous": "older-secret-0123456789",
        "signature_scheme": "hmac",
        "hmac_header": "X-Shop-Hmac",
        "hmac_encoding": "base64",
        "steps": STEPS,
    }
    created = client.post("/api/workflows/", body, format="json")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert data["signature_scheme"] == "hmac" and data["hmac_header"] == "X-Shop-Hmac"
    assert data["has_webhook_secret"] is True and data["has_webhook_secret_previous"] is True
    assert "webhook_secret" not in data and "webhook_secret_previous" not in data
    bad = client.post("/api/workflows/", {**body, "signature_scheme": "gitlab"}, format="json")
    assert bad.status_code == 400 and "signature_scheme" in bad.json()["errors"]
    no_header = client.post("/api/workflows/", {**body, "hmac_header": ""}, format="json")
    assert no_header.status_code == 400 and "hmac_header" in no_header.json()["errors"]
    schema = client.get("/api/schema/?format=json").json()
    workflow_props = schema["components"]["schemas"]["WorkflowRequest"]["properties"]
    assert {"signature_scheme", "webhook_secret_previous", "hmac_header"} <= set(workflow_props)
    hook_responses = schema["paths"]["/hooks/{token}"]["post"]["responses"]
    assert {"401", "411", "429"} <= set(hook_responses)


def test_the_admin_form_sets_the_scheme_and_write_only_secrets(org):
    from accounts.models import Role
    from workflows.models import Workflow
    from workflows.tests.test_admin import inline_post, staff

    client = staff(org, Role.EDITOR, "ed@example.com")
    fields = {
        "signature_scheme": "slack",
        "webhook_secret": "slack-secret-0123456789",
        "webhook_secret_previous": "slack-old-secret-0123456789",
    }
    response = client.post("/admin/workflows/workflow/add/", inline_post(org, [], **fields))
    assert response.status_code == 302, response.content.decode()[:2000]
    wf = Workflow.objects.get(name="From admin")
    assert (wf.signature_scheme, wf.webhook_secret_previous) == ("slack", "slack-old-secret-0123456789")
    page = client.get(f"/admin/workflows/workflow/{wf.pk}/change/").content.decode()
    assert "slack-secret-0123456789" not in page and "slack-old-secret" not in page
    assert "Slack (X-Slack-Signature)" in page and "the previous secret is accepted too" in page
    finished = inline_post(org, [], signature_scheme="slack", remove_webhook_secret_previous="on")
    assert client.post(f"/admin/workflows/workflow/{wf.pk}/change/", finished).status_code == 302
    wf.refresh_from_db()
    assert wf.webhook_secret == "slack-secret-0123456789" and wf.webhook_secret_previous == ""
