"""Testing a flow with sample data (issue 19): in process, nothing sent; the path taken is shown,
a loop runs its first items, delays and waits are previewed, stop ends the test, a failure runs the
error path."""

import pytest

from workflows import dry_run
from workflows.services import workflow_create

pytestmark = pytest.mark.django_db


def step(key, action_type="transform", config=None, **extra):
    return {"key": key, "action_type": action_type, "config": {"value": 1} if config is None else config, **extra}


POST = {"method": "POST", "url": "https://erp.example.com/lines", "body": {"sku": "{{ item.sku }}"}}
FLOW = [
    step("route", "branch", {
        "paths": [
            {"name": "vip", "when": "trigger.body.amount > 100", "steps": [
                step("lines", "for_each", {"items": "trigger.body.lines", "steps": [
                    step("shape", config={"value": "{{ index }}:{{ item.sku }}"}),
                    step("post", "http.request", POST),
                ]}),
            ]},
            {"name": "small", "when": "trigger.body.amount <= 100", "steps": [step("note")]},
        ],
        "otherwise": [step("nothing", "stop", {"status": "filtered"})],
    }),
    step("later", "delay", {"seconds": 3600}),
    step("approval", "wait", {"kind": "approval", "timeout_seconds": 600}),
    step("done", config={"value": "{{ steps.approval.output.approved }}"}),
]  # fmt: skip


def by_path(result):
    return {r["path"]: r for r in result["steps"]}


def test_a_test_follows_the_path_taken_and_runs_the_first_items_of_a_loop(org):
    wf = workflow_create(organization=org, name="Flow", steps=FLOW)
    lines = [{"sku": f"S-{i}"} for i in range(5)]
    result = dry_run.dry_run(workflow=wf, payload={"amount": 120, "lines": lines})
    assert result["outcome"] == "completed", result
    steps = by_path(result)
    assert steps["route"]["output"]["taken"] == ["vip"]
    assert steps["note"]["status"] == "skipped" and steps["nothing"]["status"] == "skipped"
    # Three items of five are run; each instance has its own path; nothing is sent.
    assert [p for p in steps if p.startswith("lines[")] == [
        "lines[0]/shape", "lines[0]/post",
        "lines[1]/shape", "lines[1]/post",
        "lines[2]/shape", "lines[2]/post",
    ]  # fmt: skip
    assert steps["lines[1]/shape"]["output"] == "1:S-1"
    assert steps["lines[2]/post"]["status"] == "preview"
    assert '"sku": "S-2"' in steps["lines[2]/post"]["would_send"]["body"]
    loop = steps["lines"]
    assert loop["would_send"]["items"] == 5 and loop["would_send"]["tested_items"] == 3
    assert loop["output"] == [None, None, None]  # each iteration's last step was only previewed
    assert steps["later"]["status"] == "preview" and steps["later"]["would_send"]["wait_seconds"] == pytest.approx(
        3600, abs=5
    )
    assert steps["approval"]["would_send"]["kind"] == "approval"
    assert steps["approval"]["output_source"] == "assumed approved (test)"
    assert steps["done"]["output"] is True


def test_otherwise_and_stop_end_the_test_as_the_run_would(org):
    flow = [
        step("route", "branch", {
            "paths": [{"name": "a", "when": "trigger.body.kind == 'a'", "steps": [step("note")]}],
            "otherwise": [step("nothing", "stop", {"status": "filtered"})],
        }),
        step("later", "delay", {"seconds": 3600}),
        step("done"),
    ]  # fmt: skip
    wf = workflow_create(organization=org, name="Flow", steps=flow)
    result = dry_run.dry_run(workflow=wf, payload={"kind": "b"})
    steps = by_path(result)
    assert result["outcome"] == "filtered"
    assert steps["route"]["output"]["taken"] == ["otherwise"]
    assert steps["nothing"]["status"] == "filtered"
    assert steps["later"]["status"] == "skipped" and steps["done"]["status"] == "skipped"


def test_a_failed_test_runs_the_error_path_with_the_failure(org):
    steps = [step("boom", "stop", {"status": "failed", "message": "no stock"}), step("after")]
    alert = [step("tell", config={"value": "{{ failure.step }}: {{ failure.error }}"})]
    wf = workflow_create(organization=org, name="Fails", steps=steps, on_failure=alert)
    result = dry_run.dry_run(workflow=wf, payload={})
    got = by_path(result)
    assert result["outcome"] == "error" and got["boom"]["error"] == "no stock"
    assert got["after"]["status"] == "skipped"
    assert got["on_failure/tell"]["output"] == "boom: no stock"


def test_continue_on_error_and_on_item_failure_continue_go_on(org):
    bad = step("bad", config={"value": "{{ item.missing.deeper }}"})
    steps = [
        step("each", "for_each", {"items": "trigger.body.xs", "on_item_failure": "continue", "steps": [bad]}),
        step("fragile", config={"value": "{{ trigger.body.nope.deeper }}"}, continue_on_error=True),
        step("end", config={"value": "reached"}),
    ]
    wf = workflow_create(organization=org, name="Goes on", steps=steps)
    result = dry_run.dry_run(workflow=wf, payload={"xs": [{}, {}]})
    got = by_path(result)
    assert got["each[0]/bad"]["status"] == "error" and got["each[1]/bad"]["status"] == "error"
    assert got["fragile"]["status"] == "error" and got["end"]["output"] == "reached"
    assert result["outcome"] == "completed"


def test_a_loop_over_its_limit_fails_the_test_naming_it(org):
    steps = [step("each", "for_each", {"items": "trigger.body.xs", "max_items": 2, "steps": [step("x")]})]
    wf = workflow_create(organization=org, name="Too many", steps=steps)
    result = dry_run.dry_run(workflow=wf, payload={"xs": [1, 2, 3]})
    assert result["outcome"] == "error" and "more than max_items (2)" in result["steps"][0]["error"]


def test_a_test_of_unsaved_steps_runs_the_unsaved_error_path(org, editor):
    from workflows import services
    from workflows.models import TestRun, Workflow

    steps = [step("boom", "stop", {"status": "failed", "message": "out of stock"})]
    alert = [step("tell", config={"value": "{{ failure.step }}: {{ failure.error }}"})]
    test = services.test_run_start(
        workflow=Workflow(organization=org, name="unsaved"), user=editor, payload={}, steps=steps, on_failure=alert
    )
    services.test_run_execute(str(test.pk))  # what the worker does with it
    result = TestRun.objects.get(pk=test.pk).result
    assert result["outcome"] == "error"
    assert by_path(result)["on_failure/tell"]["output"] == "boom: out of stock"
    # A bad error path is refused before anything is queued, naming its place.
    with pytest.raises(services.WorkflowInvalid) as exc:
        services.test_run_start(
            workflow=Workflow(organization=org, name="unsaved"), user=editor, payload={}, steps=steps,
            on_failure=[step("boom")],
        )  # fmt: skip
    assert list(exc.value.errors) == ["on_failure[0].key"]


def test_a_saved_workflow_is_tested_with_an_unsaved_error_path(org, editor):
    from workflows import services
    from workflows.models import TestRun

    wf = workflow_create(organization=org, name="Fails", steps=[step("boom", "stop", {"status": "failed"})])
    alert = [step("tell", config={"value": "{{ failure.step }}"})]
    test = services.test_run_start(workflow=wf, user=editor, payload={}, on_failure=alert)
    services.test_run_execute(str(test.pk))
    assert by_path(TestRun.objects.get(pk=test.pk).result)["on_failure/tell"]["output"] == "boom"
    wf.refresh_from_db()
    assert wf.on_failure == []  # a test saves nothing


def test_an_undefined_value_in_a_path_condition_is_false_like_in_a_filter(org):
    """The filter's condition rule holds for a branch path's ``when``: a field the event lacks makes
    the path not match (the rendered config names it), instead of failing the run."""
    wf = workflow_create(
        organization=org,
        name="VIP",
        steps=[
            step("route", "branch", {
                "paths": [{"name": "vip", "when": "trigger.body.customer.vip", "steps": [step("vip_note")]}],
                "otherwise": [step("plain_note")],
            }),
        ],
    )  # fmt: skip
    result = dry_run.dry_run(workflow=wf, payload={"amount": 3})
    assert result["outcome"] == "completed", result
    steps = by_path(result)
    assert steps["route"]["output"]["taken"] == ["otherwise"]
    assert steps["plain_note"]["status"] != "skipped"
