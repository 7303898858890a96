"""Saving a flow definition (issue 19): a tree of step lists plus the error path, checked as a whole
at save with every error naming its exact place, stored as one version's snapshot."""

import pytest
from rest_framework.test import APIClient

from integrations.services import credential_create
from workflows.models import WorkflowVersion
from workflows.services import workflow_create, workflow_definition, workflow_update
from workflows.validation import WorkflowInvalid

pytestmark = pytest.mark.django_db


def step(key, action_type="transform", config=None, **extra):
    return {"key": key, "action_type": action_type, "config": {"value": 1} if config is None else config, **extra}


def branch(key, paths, otherwise=None, **config):
    body = {"paths": [{"name": n, "when": w, "steps": s} for n, w, s in paths], **config}
    if otherwise is not None:
        body["otherwise"] = otherwise
    return step(key, "branch", body)


def loop(key, items, steps, **config):
    return step(key, "for_each", {"items": items, "steps": steps, **config})


def invalid(org, steps, on_failure=()):
    with pytest.raises(WorkflowInvalid) as exc:
        workflow_create(organization=org, name="W", steps=steps, on_failure=on_failure)
    return exc.value.errors


ORDERS = [
    step("shape", config={"value": {"total": "{{ trigger.body.total }}"}}),
    branch(
        "route",
        [
            ("vip", "steps.shape.output.total > 100", [loop("lines", "trigger.body.lines", [step("line")])]),
            ("small", "steps.shape.output.total <= 100", [step("note", config={"value": "{{ steps.shape.output }}"})]),
        ],
        otherwise=[step("nothing", "stop", {"status": "filtered", "message": "no total"})],
    ),
    step("after", config={"value": "{{ steps.route.output }}"}, continue_on_error=True),
]
ALERT = [step("tell", config={"value": "{{ failure.step }} failed: {{ failure.error }} ({{ failure.attempts }})"})]


def test_a_tree_with_an_error_path_is_saved_and_snapshotted(org):
    wf = workflow_create(organization=org, name="Orders", steps=ORDERS, on_failure=ALERT)
    assert [s.key for s in wf.steps.order_by("position")] == ["shape", "route", "after"]
    assert wf.steps.get(key="after").continue_on_error is True
    assert wf.steps.get(key="shape").continue_on_error is False
    snapshot = WorkflowVersion.objects.get(workflow=wf, number=1).definition
    assert snapshot["on_failure"][0]["key"] == "tell" and snapshot["on_failure"][0]["credential_id"] is None
    assert snapshot["steps"][2]["continue_on_error"] is True
    vip = snapshot["steps"][1]["config"]["paths"][0]["steps"][0]
    assert vip["action_type"] == "for_each" and vip["config"]["steps"][0]["key"] == "line"
    # Nested steps are stored with every field of a top-level step (the engine reads them as they are).
    line = vip["config"]["steps"][0]
    assert line["max_retries"] == 3 and line["timeout_seconds"] == 30.0 and line["continue_on_error"] is False
    assert line["on_in_doubt"] == "" and line["credential_id"] is None and "credential" in line
    assert snapshot == workflow_definition(wf)


def test_saving_the_same_tree_and_error_path_again_keeps_the_version(org):
    wf = workflow_create(organization=org, name="Orders", steps=ORDERS, on_failure=ALERT)
    same = workflow_update(workflow=wf, steps=ORDERS, on_failure=ALERT)
    assert same.version == 1
    changed = workflow_update(workflow=wf, on_failure=[])
    assert changed.version == 2 and changed.on_failure == []
    assert WorkflowVersion.objects.get(workflow=wf, number=2).definition["on_failure"] == []


def test_keys_are_unique_in_the_whole_tree_and_the_error_path(org):
    errors = invalid(org, ORDERS, on_failure=[step("line")])
    assert "on_failure[0].key" in errors, errors
    assert "steps[1].config.paths[0].steps[0].config.steps[0]" in errors["on_failure[0].key"][0]
    errors = invalid(org, [branch("route", [("a", "1", [step("x")]), ("b", "1", [step("x")])])])
    assert list(errors) == ["steps[0].config.paths[1].steps[0].key"]


def test_a_nested_config_error_names_the_exact_place(org):
    bad = step("post", "http.request", {"method": "POST", "url": "ftp://example.com/x"})
    errors = invalid(org, [step("a"), step("b"), branch("route", [("a", "1", [step("ok"), bad])])])
    assert list(errors) == ["steps[2].config.paths[0].steps[1].config.url"]
    assert "http:// or https://" in errors["steps[2].config.paths[0].steps[1].config.url"][0]
    errors = invalid(org, [loop("each", "trigger.body.lines", [step("x", max_retries=99)])])
    assert list(errors) == ["steps[0].config.steps[0].max_retries"]
    errors = invalid(org, [step("a")], on_failure=[step("b", "nope")])
    assert list(errors) == ["on_failure[0].action_type"]


def test_a_condition_that_does_not_parse_is_refused_at_its_path(org):
    errors = invalid(org, [branch("route", [("a", "trigger.body.n >", [])])])
    assert list(errors) == ["steps[0].config.paths[0].when"]
    assert "template syntax error" in errors["steps[0].config.paths[0].when"][0]


def test_paths_are_named_uniquely(org):
    errors = invalid(org, [branch("route", [("a", "1", []), ("a", "2", [])])])
    assert list(errors) == ["steps[0].config.paths[1].name"]


def test_templates_read_only_steps_sure_to_have_run_before_them(org):
    other_path = branch(
        "route", [("a", "1", [step("x")]), ("b", "1", [step("y", config={"value": "{{ steps.x.output }}"})])]
    )
    errors = invalid(org, [other_path])
    message = errors["steps[0].config.paths[1].steps[0].config.value"][0]
    assert "not sure to have run" in message and "default" in message
    after = [branch("route", [("a", "1", [step("x")])]), step("z", config={"value": "{{ steps.x.output }}"})]
    assert "steps[1].config.value" in invalid(org, after)
    # With a default (or a test that it is defined) it may be read.
    ok = [branch("route", [("a", "1", [step("x")])]), step("z", config={"value": "{{ steps.x.output | default('') }}"})]
    workflow_create(organization=org, name="Ok", steps=ok)
    ok2 = [branch("r2", [("a", "1", [step("x2")])]), step("z2", config={"value": "{{ 1 if steps.x2 is defined }}"})]
    workflow_create(organization=org, name="Ok2", steps=ok2)
    # A step that does not exist anywhere is still "not an earlier step".
    assert (
        "not an earlier step"
        in invalid(org, [step("a", config={"value": "{{ steps.ghost.output }}"})])["steps[0].config.value"][0]
    )


def test_loop_bodies_know_item_and_index_and_the_error_path_knows_failure(org):
    body = [step("x", config={"value": "{{ index }}: {{ item.sku }}"})]
    workflow_create(organization=org, name="Loop", steps=[loop("each", "trigger.body.lines", body)])
    errors = invalid(org, [step("x", config={"value": "{{ item }}"})])
    assert "unknown variable 'item'" in errors["steps[0].config.value"][0]
    errors = invalid(org, [step("x", config={"value": "{{ failure.error }}"})])
    assert "unknown variable 'failure'" in errors["steps[0].config.value"][0]
    # The error path reads the main steps only with a default: any of them may be the one that failed.
    errors = invalid(org, [step("a")], on_failure=[step("b", config={"value": "{{ steps.a.output }}"})])
    assert "not sure to have run" in errors["on_failure[0].config.value"][0]
    # The loop's own output is not readable inside its body (it is not final there).
    errors = invalid(org, [loop("each", "trigger.body.lines", [step("x", config={"value": "{{ steps.each }}"})])])
    assert "steps[0].config.steps[0].config.value" in errors


def test_depth_and_step_count_limits_come_from_settings(org, settings):
    deep = [step("leaf")]
    for level in range(5):
        deep = [loop(f"l{level}", "trigger.body.x", deep)]
    errors = invalid(org, deep)  # the leaf is at depth 6
    where = "steps[0]" + ".config.steps[0]" * 5
    assert list(errors) == [where] and "POTAFLOW_FLOW_MAX_DEPTH" in errors[where][0]
    settings.POTAFLOW_FLOW_MAX_DEPTH = 6
    workflow_create(organization=org, name="Deep", steps=deep)
    settings.POTAFLOW_FLOW_MAX_STEPS = 3
    errors = invalid(org, [branch("r", [("a", "1", [step("x"), step("y")])])], on_failure=[step("z")])
    assert "at most 3 steps" in errors["steps"][0] and "got 4" in errors["steps"][0]


def test_more_than_fifty_top_level_steps_are_fine_now(org):
    workflow_create(organization=org, name="Long", steps=[step(f"s{i}") for i in range(120)])


def test_nested_credentials_are_checked_and_stored_by_id(org, other_org, fernet_keys):
    hosts = {"token": "t0k3n-value", "allowed_hosts": ["example.com"]}
    mine = credential_create(organization=org, name="hook", kind="http_bearer", secret=hosts)
    theirs = credential_create(organization=other_org, name="hook", kind="http_bearer", secret=hosts)
    post = {"method": "POST", "url": "https://example.com/x"}
    errors = invalid(org, [loop("each", "trigger.body.x", [step("p", "http.request", post, credential=theirs.pk)])])
    assert "no credential" in errors["steps[0].config.steps[0].credential"][0]
    wf = workflow_create(
        organization=org,
        name="C",
        steps=[loop("each", "trigger.body.x", [step("p", "http.request", post, credential=mine.pk)])],
    )
    nested = workflow_definition(wf)["steps"][0]["config"]["steps"][0]
    assert nested["credential"] == mine.pk and nested["credential_id"] == mine.pk


def test_non_list_error_path_and_non_object_steps_are_refused(org):
    errors = invalid(org, [step("a")], on_failure={"key": "x"})
    assert "on_failure" in errors
    errors = invalid(org, [3])
    assert errors["steps[0]"] == ["A step must be an object."]


# -- through the API -----------------------------------------------------------------------
def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_api_reads_and_writes_the_error_path_and_continue_on_error(editor):
    body = {"name": "Orders", "trigger_type": "webhook", "steps": ORDERS, "on_failure": ALERT}
    response = client_for(editor).post("/api/workflows/", body, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert [s["key"] for s in data["on_failure"]] == ["tell"]
    assert [s["continue_on_error"] for s in data["steps"]] == [False, False, True]
    assert data["steps"][1]["config"]["paths"][0]["steps"][0]["config"]["steps"][0]["key"] == "line"
    again = client_for(editor).put(f"/api/workflows/{data['id']}/", {**body, "on_failure": []}, format="json")
    assert again.status_code == 200 and again.json()["on_failure"] == [] and again.json()["version"] == 2


def test_the_api_answers_400_naming_the_nested_field(editor):
    bad = branch("route", [("a", "1", [step("a1"), step("p", "http.request", {"method": "POST", "url": "nope"})])])
    body = {"name": "Bad", "trigger_type": "manual", "steps": [step("x"), step("y"), bad], "on_failure": [step("x")]}
    response = client_for(editor).post("/api/workflows/", body, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert "steps[2].config.paths[0].steps[1].config.url" in errors, errors
    assert "on_failure[0].key" in errors, errors


def test_a_defaulted_read_of_a_step_that_did_not_run_renders_the_default():
    from workflows import templating

    context = {"steps": {"shape": {"output": {"n": 1}}}, "trigger": {}}
    assert templating.render_string('{{ steps.x.output.n | default("none") }}', context) == "none"
    assert templating.render_string("{{ steps.shape.output.n | default(0) }}", context) == 1
    with pytest.raises(templating.TemplateError, match="has no attribute 'x'"):
        templating.render_string("{{ steps.x.output.n }}", context)


def test_restoring_a_version_brings_back_its_error_path(org):
    from workflows.versions import version_restore

    wf = workflow_create(organization=org, name="Orders", steps=ORDERS, on_failure=ALERT)
    workflow_update(workflow=wf, steps=[step("only")], on_failure=[])
    restored = version_restore(workflow=wf, number=1)
    assert restored.version == 3 and [s["key"] for s in restored.on_failure] == ["tell"]
    assert [s.key for s in restored.steps.order_by("position")] == ["shape", "route", "after"]


# -- the published JSON Schema --------------------------------------------------------------
def test_the_definition_schema_is_published_and_recursive(client):
    import jsonschema

    response = client.get("/api/schema/workflow-definition.json")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/schema+json")
    schema = response.json()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(validator.iter_errors({"steps": ORDERS, "on_failure": ALERT}))
    assert set(schema["$defs"]["config"]) >= {"branch", "for_each", "delay", "wait", "stop", "http.request"}
    # A nested loop missing its items, two levels down, is found: the nested lists refer back to the step list.
    bad = [branch("route", [("a", "1", [loop("each", "x", [])])])]
    del bad[0]["config"]["paths"][0]["steps"][0]["config"]["items"]
    errors = list(validator.iter_errors({"steps": bad}))
    assert errors and any("'items' is a required property" in e.message for e in errors)
    assert list(validator.iter_errors({"steps": [step("x", "no.such.action")]}))
    assert list(validator.iter_errors({"steps": [step("x", continue_on_error="yes")]}))


def test_the_openapi_schema_documents_on_failure_and_the_definition_schema(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    doc = response.json()
    assert "/api/schema/workflow-definition.json" in doc["paths"]
    workflow = doc["components"]["schemas"]["Workflow"]["properties"]
    assert "on_failure" in workflow and "continue_on_error" in doc["components"]["schemas"]["Step"]["properties"]


def test_the_builders_template_check_knows_loop_and_error_path_variables_and_other_steps(editor):
    client = client_for(editor)

    def check(**body):
        response = client.post("/api/templates/check/", body, format="json")
        assert response.status_code == 200, response.json()
        return response.json()

    assert "unknown variable 'item'" in check(template="{{ item.sku }}")["error"]
    assert check(template="{{ item.sku }} #{{ index }}", names=["item", "index"])["valid"] is True
    assert check(template="{{ failure.error }}", names=["failure"])["valid"] is True
    other = check(template="{{ steps.x.output }}", other_steps=["x"])
    assert other["valid"] is False and "not sure to have run" in other["error"]
    assert check(template="{{ steps.x.output | default('') }}", other_steps=["x"])["valid"] is True
    response = client.post("/api/templates/check/", {"template": "{{ a }}", "names": ["a"]}, format="json")
    assert response.status_code == 400 and "names" in response.json()["errors"]


def test_an_unknown_field_of_a_nested_or_error_path_step_is_named(org):
    errors = invalid(org, [loop("each", "trigger.body.x", [step("x", contine_on_error=True)])])
    assert list(errors) == ["steps[0].config.steps[0].contine_on_error"]
    assert "unknown step field 'contine_on_error'" in errors["steps[0].config.steps[0].contine_on_error"][0]
    errors = invalid(org, [step("a")], on_failure=[step("b", retries=3)])
    assert list(errors) == ["on_failure[0].retries"]
