"""Export documents, import (API, service, commands) and the template catalogue's shape."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import Role
from integrations.services import credential_create
from workflows import portability
from workflows.models import TriggerType, Workflow
from workflows.services import WorkflowInvalid, workflow_create
from workflows.tests.conftest import make_user

pytestmark = pytest.mark.django_db

SECRET = "a-webhook-secret-long-enough-1234"  # noqa: S105 - test value


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def slack(org, fernet_keys):
    return credential_create(organization=org, name="team-slack", kind="slack_bot_token", secret={"token": "xoxb-123"})


@pytest.fixture
def source(org, slack):
    return workflow_create(
        organization=org,
        name="Orders",
        description="New orders to Slack",
        trigger_type=TriggerType.WEBHOOK,
        webhook_secret=SECRET,
        signature_scheme="github",
        steps=[
            {"key": "gate", "action_type": "filter", "config": {"condition": "trigger.body.amount > 5"}},
            {"key": "notify", "action_type": "slack.message", "credential": slack.pk, "max_retries": 5,
             "config": {"channel": "#orders", "text": "Order {{ trigger.body.id }}"}},
        ],
    )  # fmt: skip


def test_export_has_steps_and_credential_references_but_no_secret_or_token(editor, source, slack):
    response = client_for(editor).get(f"/api/workflows/{source.pk}/export/")
    assert response.status_code == 200
    document = response.json()
    text = json.dumps(document)
    assert SECRET not in text and source.webhook_token not in text and "xoxb-123" not in text
    assert document["potaflow_export"] == 2 and document["on_failure"] == []
    assert document["workflow"] | {"webhook_secret_set": None} == {
        "name": "Orders", "description": "New orders to Slack", "trigger_type": "webhook", "schedule": "",
        "timezone": "UTC", "signature_scheme": "github", "hmac_header": "", "hmac_algorithm": "sha256",
        "hmac_encoding": "hex", "hmac_prefix": "", "webhook_secret_set": None,
    }  # fmt: skip
    assert document["workflow"]["webhook_secret_set"] is True
    assert [s["key"] for s in document["steps"]] == ["gate", "notify"]
    assert document["steps"][1]["credential"] == {"name": "team-slack", "kind": "slack_bot_token"}
    assert document["steps"][1]["max_retries"] == 5 and document["steps"][0]["credential"] is None


def test_a_round_trip_into_another_organization_maps_credentials_by_name_and_kind(
    source, other_org, outsider, fernet_keys
):
    theirs = credential_create(
        organization=other_org, name="team-slack", kind="slack_bot_token", secret={"token": "xoxb-999"}
    )
    document = portability.workflow_export(source)
    response = client_for(outsider).post("/api/workflows/import/", document, format="json")
    assert response.status_code == 201, response.json()
    imported = Workflow.objects.get(pk=response.json()["id"])
    assert (imported.organization_id, imported.is_active, imported.webhook_secret) == (other_org.pk, False, "")
    assert imported.webhook_token != source.webhook_token and imported.signature_scheme == "github"
    steps = list(imported.steps.order_by("position"))
    assert [s.key for s in steps] == ["gate", "notify"] and steps[1].credential_id == theirs.pk
    again = portability.workflow_export(imported)
    assert again["steps"] == document["steps"] and again["workflow"]["name"] == "Orders"


def test_import_reports_every_problem_at_once_and_names_the_missing_credential(source, other_org, outsider):
    document = portability.workflow_export(source)
    document["workflow"]["schedule"] = "61 * * * *"
    document["workflow"]["colour"] = "blue"
    document["steps"][0]["config"] = {"condition": "{{ nope"}
    document["steps"].append({"key": "bad", "action_type": "no.such"})
    response = client_for(outsider).post("/api/workflows/import/", document, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {
        "workflow.schedule", "workflow.colour", "steps[0].config.condition", "steps[1].credential",
        "steps[2].action_type",
    }, errors  # fmt: skip
    assert "team-slack" in errors["steps[1].credential"][0] and "slack_bot_token" in errors["steps[1].credential"][0]
    assert not Workflow.objects.filter(organization=other_org).exists()


def test_a_reference_can_be_mapped_to_another_credential_and_the_name_overridden(source, org, editor, fernet_keys):
    other = credential_create(organization=org, name="alerts", kind="slack_bot_token", secret={"token": "xoxb-7"})
    smtp = credential_create(
        organization=org,
        name="mail",
        kind="smtp",
        secret={"host": "127.0.0.1", "port": 25, "security": "none", "from_email": "r@acme.test"},
    )
    document = portability.workflow_export(source)
    client = client_for(editor)
    wrong_kind = {**document, "import": {"credentials": {"team-slack": smtp.pk}}}
    response = client.post("/api/workflows/import/", wrong_kind, format="json")
    assert response.status_code == 400 and "needs kind slack_bot_token" in str(response.json()["errors"])
    body = {**document, "import": {"name": "Orders (copy)", "credentials": {"team-slack": other.pk}}}
    response = client.post("/api/workflows/import/", body, format="json")
    assert response.status_code == 201, response.json()
    imported = Workflow.objects.get(pk=response.json()["id"])
    assert imported.name == "Orders (copy)" and imported.steps.get(key="notify").credential_id == other.pk


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([1, 2], "document"),
        ({"potaflow_export": 3, "workflow": {"name": "x", "trigger_type": "manual"}, "steps": []}, "potaflow_export"),
        (
            {"potaflow_export": 1, "workflow": {"name": "x", "trigger_type": "manual"}, "steps": [], "on_failure": []},
            "on_failure",
        ),
        (
            {"potaflow_export": 2, "workflow": {"name": "x", "trigger_type": "manual"}, "steps": [], "on_failure": 1},
            "on_failure",
        ),
        ({"potaflow_export": 1, "workflow": "x", "steps": []}, "workflow"),
        ({"potaflow_export": 1, "workflow": {"name": "x", "trigger_type": "manual"}, "steps": {}}, "steps"),
        ({"potaflow_export": 1, "workflow": {"name": 3, "trigger_type": "manual"}, "steps": []}, "workflow.name"),
    ],
)
def test_malformed_documents_are_a_400_naming_the_field(editor, document, field):
    response = client_for(editor).post("/api/workflows/import/", document, format="json")
    assert response.status_code == 400 and field in response.json()["errors"], response.json()


def test_viewers_export_but_only_editors_import(org, source):
    viewer = make_user(org, Role.VIEWER, "v@example.com")
    client = client_for(viewer)
    document = client.get(f"/api/workflows/{source.pk}/export/").json()
    assert client.post("/api/workflows/import/", document, format="json").status_code == 403


def test_another_organizations_workflow_cannot_be_exported(source, outsider):
    assert client_for(outsider).get(f"/api/workflows/{source.pk}/export/").status_code == 404


def test_export_and_import_commands_round_trip_files(source, org, other_org, tmp_path, fernet_keys):
    out = StringIO()
    call_command("export_workflows", "--organization", org.slug, "--output", str(tmp_path), stdout=out)
    (path,) = tmp_path.glob("*.json")
    assert path.name == f"{source.pk}-orders.json" and "exported 1 workflow(s)" in out.getvalue()
    assert SECRET not in path.read_text()

    err = StringIO()
    with pytest.raises(CommandError, match="1 document"):
        call_command("import_workflows", str(path), "--organization", other_org.slug, stdout=StringIO(), stderr=err)
    assert "steps[1].credential: No slack_bot_token credential named 'team-slack'" in err.getvalue()

    credential_create(organization=other_org, name="team-slack", kind="slack_bot_token", secret={"token": "x"})
    out = StringIO()
    call_command("import_workflows", str(path), "--organization", other_org.slug, stdout=out)
    assert "imported 1 workflow(s), skipped 0" in out.getvalue()
    assert Workflow.objects.get(organization=other_org).is_active is False

    listing = StringIO()
    call_command("export_workflows", str(source.pk), stdout=listing)
    assert [d["workflow"]["name"] for d in json.loads(listing.getvalue())] == ["Orders"]


def test_templates_are_listed_and_each_is_a_valid_document(editor, org, fernet_keys):
    response = client_for(editor).get("/api/templates/")
    assert response.status_code == 200
    listed = {t["slug"]: t for t in response.json()}
    assert set(listed) == {
        "webhook-slack", "daily-http-email", "webhook-sheets", "webhook-filter-forward", "github-push-slack",
        "order-branch-vip", "csv-rows-to-sheets", "refund-approval", "signup-delay-reminder",
    }  # fmt: skip
    assert listed["github-push-slack"]["document"]["workflow"]["signature_scheme"] == "github"
    assert listed["daily-http-email"]["trigger_type"] == "schedule"
    assert client_for(editor).get("/api/templates/webhook-slack/").json()["title"] == "Webhook → Slack message"
    assert client_for(editor).get("/api/templates/nope/").status_code == 404
    assert APIClient().get("/api/templates/").status_code == 401
    kinds = {
        "slack_bot_token": {"token": "x"},
        "smtp": {"host": "127.0.0.1", "port": 25, "security": "none", "from_email": "r@acme.test"},
        "google_service_account": None,
    }
    for template in portability.templates():
        credentials = {}
        for ref in template.credentials:
            if kinds[ref["kind"]] is None:
                from testing.network import service_account_key

                kinds[ref["kind"]] = {"key": service_account_key("https://oauth2.example.com/token")}
            credential = credential_create(organization=org, name=f"{template.slug}-{ref['name']}",
                                           kind=ref["kind"], secret=kinds[ref["kind"]])  # fmt: skip
            credentials[ref["name"]] = credential.pk
        body = {**template.document, "import": {"credentials": credentials}}
        response = client_for(editor).post("/api/workflows/import/", body, format="json")
        assert response.status_code == 201, (template.slug, response.json())
        assert response.json()["is_active"] is False


def test_a_template_without_its_credential_names_it(org):
    with pytest.raises(WorkflowInvalid) as exc:
        portability.workflow_import(organization=org, document=portability.template("webhook-slack").document)
    assert exc.value.errors == {
        "steps[0].credential": [
            "No slack_bot_token credential named 'slack' in this organization: create it, "
            "or map the reference to one of your credentials."
        ]
    }


# -- format 2: nested steps and the error path (issue 19) ---------------------------------------
def slack_step(key, credential_id):
    return {"key": key, "action_type": "slack.message", "credential": credential_id,
            "config": {"channel": "#orders", "text": "{{ trigger.body.id }}"}}  # fmt: skip


@pytest.fixture
def flow(org, slack):
    return workflow_create(
        organization=org,
        name="Routed",
        trigger_type=TriggerType.WEBHOOK,
        steps=[
            {"key": "route", "action_type": "branch", "config": {
                "paths": [{"name": "big", "when": "trigger.body.amount > 100", "steps": [
                    {"key": "each", "action_type": "for_each",
                     "config": {"items": "trigger.body.lines", "steps": [slack_step("line", slack.pk)]}},
                ]}],
                "otherwise": [slack_step("small", slack.pk)],
            }},
        ],
        on_failure=[slack_step("alert", slack.pk)],
    )  # fmt: skip


def test_format_2_exports_nested_steps_and_the_error_path_with_credential_references(flow):
    document = portability.workflow_export(flow)
    assert document["potaflow_export"] == 2
    reference = {"name": "team-slack", "kind": "slack_bot_token"}
    paths = document["steps"][0]["config"]["paths"]
    line = paths[0]["steps"][0]["config"]["steps"][0]
    assert line["key"] == "line" and line["credential"] == reference and "credential_id" not in line
    assert document["steps"][0]["config"]["otherwise"][0]["credential"] == reference
    assert document["on_failure"][0]["key"] == "alert" and document["on_failure"][0]["credential"] == reference
    assert portability.credential_references(document) == [reference]


def test_format_2_round_trips_into_another_organization_mapping_nested_credentials(flow, other_org, fernet_keys):
    theirs = credential_create(
        organization=other_org, name="team-slack", kind="slack_bot_token", secret={"token": "xoxb-9"}
    )
    document = json.loads(json.dumps(portability.workflow_export(flow)))
    copy = portability.workflow_import(organization=other_org, document=document)
    config = copy.steps.get(key="route").config
    assert config["paths"][0]["steps"][0]["config"]["steps"][0]["credential"] == theirs.pk
    assert config["otherwise"][0]["credential"] == theirs.pk
    assert copy.on_failure[0]["credential"] == theirs.pk and copy.is_active is False


def test_format_2_import_names_a_missing_nested_credential_at_its_place(flow, other_org):
    document = portability.workflow_export(flow)
    with pytest.raises(WorkflowInvalid) as exc:
        portability.workflow_import(organization=other_org, document=document)
    errors = exc.value.errors
    assert "steps[0].config.paths[0].steps[0].config.steps[0].credential" in errors, errors
    assert (
        "on_failure[0].credential" in errors
        and "No slack_bot_token credential" in errors["on_failure[0].credential"][0]
    )


def test_a_format_1_document_still_imports(org):
    document = {
        "potaflow_export": 1,
        "workflow": {"name": "Old", "trigger_type": "manual"},
        "steps": [{"key": "a", "action_type": "transform", "config": {"value": 1}, "max_retries": 2,
                   "backoff_seconds": 2.0, "backoff_max_seconds": 300.0, "timeout_seconds": 30.0,
                   "on_in_doubt": "", "credential": None}],
    }  # fmt: skip
    imported = portability.workflow_import(organization=org, document=document)
    assert [s.key for s in imported.steps.all()] == ["a"] and imported.on_failure == []


def _keys(steps):
    """The tree of keys: key, or (key, {slot: [...]}) for control steps."""
    from workflows.flow import tree

    out = []
    for spec in steps:
        slots = tree.slots(spec)
        out.append((spec["key"], {slot.name: _keys(slot.steps) for slot in slots}) if slots else spec["key"])
    return out


@pytest.mark.parametrize(
    ("slug", "tree_of_keys", "on_failure"),
    [
        ("order-branch-vip", [("route", {"vip": ["post_vip"], "otherwise": ["mail_support"]})], []),
        ("csv-rows-to-sheets", ["parse", ("rows", {"steps": ["append"]}), "summary"], []),
        (
            "refund-approval",
            ["announce", "approval", ("decide", {"approved": ["pay"], "otherwise": ["refused"]})],
            ["tell_oncall"],
        ),
        ("signup-delay-reminder", [("skip_done", {"done": ["already"]}), "two_days", "remind"], []),
    ],
)
def test_each_flow_template_creates_its_tree(org, fernet_keys, slug, tree_of_keys, on_failure):
    secrets = {
        "slack_bot_token": {"token": "xoxb-1"},
        "smtp": {"host": "127.0.0.1", "port": 25, "security": "none", "from_email": "r@acme.test"},
    }
    template = portability.template(slug)
    assert template.document["potaflow_export"] == 2
    credentials = {}
    for ref in template.credentials:
        if ref["kind"] == "google_service_account":
            from testing.network import service_account_key

            secrets[ref["kind"]] = {"key": service_account_key("https://oauth2.example.com/token")}
        made = credential_create(organization=org, name=ref["name"], kind=ref["kind"], secret=secrets[ref["kind"]])
        credentials[ref["name"]] = made.pk
    workflow = portability.workflow_import(organization=org, document=template.document)
    steps = [
        {"key": s.key, "action_type": s.action_type, "config": s.config} for s in workflow.steps.order_by("position")
    ]
    assert _keys(steps) == tree_of_keys
    assert [s["key"] for s in workflow.on_failure] == on_failure
    kinds = {ref["kind"] for ref in template.credentials}
    assert kinds <= {"slack_bot_token", "smtp", "google_service_account"}
    # Nested steps were mapped to this organization's credentials by name and kind.
    from workflows.flow import tree

    for located in tree.walk_definition({"steps": steps, "on_failure": workflow.on_failure}):
        if located.depth > 1 and located.spec["action_type"] in ("slack.message", "email.send", "sheets.append_row"):
            assert located.spec["credential"] in credentials.values(), located.where
