"""Flow control leftovers (issue 19) with the real worker, broker and database: a filter inside a
branch path or a loop iteration, replay from a failed step instance, waiting runs in metrics and status."""

# ruff: noqa: F811 - the fixtures are test_flow_run's (imported), and tests take them as arguments

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Membership, Role, User
from testing.network import Reply
from testing.worker import wait_for_run
from workflows.models import Run, StepIteration, StepRun
from workflows.services import run_replay, start_manual_run, workflow_create, workflow_delete, workflow_update
from workflows.tests.test_flow_run import celery_worker_env, http, instances, org, stack, t  # noqa: F401
from workflows.tests.test_metrics import scrape, value

pytestmark = pytest.mark.slow

OPEN = {"pending", "running", "retrying", "waiting"}


def keep_positive(key="keep"):
    return {"key": key, "action_type": "filter", "config": {"condition": "{{ item > 0 }}"}}


# -- a filter inside a branch path or a loop iteration -----------------------------------------
def test_a_filter_inside_an_iteration_filters_that_item_only_and_the_loop_goes_on(stack, org):
    always = {"name": "always", "when": "true", "steps": [keep_positive(), t("ratio", {"r": "{{ 12 // item }}"})]}
    body = [
        t("pre", {"n": "{{ item }}"}),
        {"key": "check", "action_type": "branch", "config": {"paths": [always]}},
        t("post", {"n": "{{ item }}"}),
    ]
    workflow = workflow_create(
        organization=org,
        name="Filtered items",
        steps=[
            {"key": "lines", "action_type": "for_each", "config": {"items": "{{ trigger.body.items }}", "steps": body}},
            t("total", {"all": "{{ steps.lines.output }}"}),
        ],
    )
    run = start_manual_run(workflow=workflow, body={"items": [3, 0, 4]})
    run = wait_for_run(run.pk, {"succeeded", "filtered", "failed"}, timeout=30, worker=stack)
    rows = instances(run)
    assert run.status == "succeeded"
    assert rows["lines[1]/keep"].status == "filtered"
    assert rows["lines[1]/ratio"].status == "skipped"  # written with the filter (one segment), never run
    assert rows["lines[1]/check"].status == "filtered"  # the branch holding the filter is closed
    assert "lines[1]/post" not in rows  # the rest of the iteration did not run
    assert rows["lines[2]/post"].status == "succeeded"  # the next item ran
    loop = rows["lines"]
    assert loop.status == "succeeded" and loop.loop_finished == 3
    assert loop.output == [{"n": 3}, None, {"n": 4}]
    statuses = list(StepIteration.objects.filter(loop=loop).values_list("status", flat=True))
    assert statuses == ["succeeded", "filtered", "succeeded"]
    assert rows["total"].output == {"all": loop.output}
    assert not [path for path, row in rows.items() if row.status in OPEN]


def test_a_filter_inside_a_branch_path_ends_the_run_as_filtered_and_closes_every_container(stack, org):
    inner = {
        "key": "inner",
        "action_type": "branch",
        "config": {
            "paths": [
                {
                    "name": "deep",
                    "when": "true",
                    "steps": [
                        {"key": "gate", "action_type": "filter", "config": {"condition": "{{ trigger.body.go }}"}},
                        t("never", {"x": 1}),
                    ],
                }
            ]
        },
    }
    path_a = {"name": "a", "when": "true", "steps": [t("first", {"x": 1}), inner]}
    workflow = workflow_create(
        organization=org,
        name="Filtered path",
        steps=[{"key": "route", "action_type": "branch", "config": {"paths": [path_a]}}, t("after", {"x": 2})],
    )
    run = start_manual_run(workflow=workflow, body={"go": False})
    run = wait_for_run(run.pk, {"succeeded", "filtered", "failed"}, timeout=30, worker=stack)
    rows = instances(run)
    assert run.status == "filtered"
    assert rows["gate"].status == "filtered" and rows["never"].status == "skipped"
    assert rows["inner"].status == "filtered" and rows["route"].status == "filtered"
    assert rows["first"].status == "succeeded" and "after" not in rows
    assert not [path for path, row in rows.items() if row.status in OPEN]
    passed = wait_for_run(start_manual_run(workflow=workflow, body={"go": True}).pk, {"succeeded"}, worker=stack)
    assert StepRun.objects.get(run=passed, key="after").status == "succeeded"


def test_when_an_item_fails_the_run_its_iteration_is_failed_and_those_not_run_are_skipped(stack, org):
    body = [{"key": "ratio", "action_type": "transform", "max_retries": 0, "config": {"value": "{{ 10 // item }}"}}]
    workflow = workflow_create(
        organization=org,
        name="Stops",
        steps=[
            {"key": "lines", "action_type": "for_each", "config": {"items": "{{ trigger.body.items }}", "steps": body}}
        ],
    )
    run = wait_for_run(start_manual_run(workflow=workflow, body={"items": [1, 0, 5]}).pk, {"failed"}, worker=stack)
    iterations = StepIteration.objects.filter(loop__run=run).order_by("index")
    assert [(i.status, "division" in i.error) for i in iterations] == [
        ("succeeded", False),
        ("failed", True),
        ("skipped", False),
    ]


# -- replay from a failed step instance ---------------------------------------------------------
def replay_workflow(base_url, ratio):
    def post(key, path, body):
        return {
            "key": key,
            "action_type": "http.request",
            "config": {"method": "POST", "url": base_url + path, "body": body},
        }

    body = [
        t("note", {"n": "{{ item }}"}),
        {"key": "ratio", "action_type": "transform", "max_retries": 0, "config": {"value": {"r": ratio}}},
        post("post", "/item", {"i": "{{ index }}", "r": "{{ steps.ratio.output.r }}"}),
    ]
    loop = {"key": "lines", "action_type": "for_each", "config": {"items": "{{ trigger.body.items }}", "steps": body}}
    return [post("pre", "/pre", {"x": 1}), loop, post("total", "/total", {"all": "{{ steps.lines.output }}"})]


def test_replay_from_a_failed_iteration_runs_that_iteration_and_what_follows(stack, org, http):
    http.route("POST", "/pre", Reply(200, {"ok": True}))
    http.route("POST", "/item", Reply(200, {"ok": True}))
    http.route("POST", "/total", Reply(200, {"ok": True}))
    workflow = workflow_create(organization=org, name="Lines", steps=replay_workflow(http.url, "{{ 10 // item }}"))
    run = wait_for_run(start_manual_run(workflow=workflow, body={"items": [2, 0, 5, 10]}).pk, {"failed"}, worker=stack)
    assert [r.path for r in http.requests] == ["/pre", "/item"]  # item 0 posted, item 1 failed at ratio

    editor = User.objects.create_user(email="ed@flow.test", password="pw-123456789!")
    Membership.objects.create(user=editor, organization=org, role=Role.EDITOR)
    api = APIClient()
    api.force_authenticate(editor)
    # A step inside a loop is named by its instance; a path the run never had is refused.
    for wrong, says in (("ratio", "runs once per item"), ("lines[7]/ratio", "no step instance"), ("nope", "no step")):
        answer = api.post(f"/api/runs/{run.pk}/replay/", {"from_step": wrong}, format="json")
        assert answer.status_code == 400 and says in str(answer.json()), answer.json()

    # As it ran (the member page's replay: no from_step): it starts at the failed instance and fails there again.
    again = run_replay(run=run)
    assert again.replay_from == "lines[1]/ratio"
    again = wait_for_run(again.pk, {"failed"}, worker=stack)
    assert [r.path for r in http.requests] == ["/pre", "/item"]  # nothing before it was sent again
    assert StepRun.objects.get(run=again, path="lines[1]/ratio").status == "failed"

    # Fixed, then replayed from the failed instance with the current version (through the API).
    workflow_update(workflow=workflow, steps=replay_workflow(http.url, "{{ 10 // (item or 1) }}"))
    answer = api.post(
        f"/api/runs/{run.pk}/replay/", {"from_step": "lines[1]/ratio", "version": "current"}, format="json"
    )
    assert answer.status_code == 201, answer.json()
    replay = wait_for_run(answer.json()["id"], {"succeeded"}, timeout=30, worker=stack)
    rows = instances(replay)
    reused = sorted(path for path, row in rows.items() if row.reused)
    assert reused == ["lines[0]/note", "lines[0]/post", "lines[0]/ratio", "lines[1]/note", "pre"]
    assert not rows["lines[1]/ratio"].reused and rows["lines[1]/ratio"].output == {"r": 10}
    sent = [(r.path, r.json().get("i")) for r in http.requests[2:]]
    assert sent == [("/item", 1), ("/item", 2), ("/item", 3), ("/total", None)]  # that iteration and what follows
    assert rows["total"].status == "succeeded" and len(http.requests[-1].json()["all"]) == 4
    keys = {r.headers.get("idempotency-key") for r in http.requests[2:5]}
    assert keys == {f"potaflow-{replay.pk}-lines[{i}]/post" for i in (1, 2, 3)}


# -- waiting runs in the metrics and in potaflow_status ------------------------------------------
def test_waiting_runs_by_kind_iterations_and_approvals_are_measured_and_the_waits_due_are_listed(stack, org):
    before = scrape()
    one = {"delay": {"seconds": 600}, "webhook": {"kind": "webhook", "timeout_seconds": 300}}
    runs = {}
    for name, config in one.items():
        action = "delay" if name == "delay" else "wait"
        steps = [{"key": "hold", "action_type": action, "config": config}]
        workflow = workflow_create(organization=org, name=f"W {name}", steps=steps)
        runs[name] = start_manual_run(workflow=workflow, body={})
    approval = workflow_create(
        organization=org,
        name="W approval",
        steps=[{"key": "ok", "action_type": "wait", "config": {"kind": "approval"}}, t("after", {"x": 1})],
    )
    decided = [start_manual_run(workflow=approval, body={}) for _ in range(3)]
    body = [keep_positive(), t("kept", {"n": "{{ item }}"})]
    loop = {"key": "lines", "action_type": "for_each", "config": {"items": "{{ trigger.body.items }}", "steps": body}}
    looped = workflow_create(organization=org, name="W loop", steps=[loop])
    loop_run = start_manual_run(workflow=looped, body={"items": [1, 0, 2]})
    for run in [*runs.values(), *decided]:
        wait_for_run(run.pk, {"waiting"}, worker=stack)
    wait_for_run(loop_run.pk, {"succeeded"}, worker=stack)
    editor = User.objects.create_user(email="ed@flow.test", password="pw-123456789!")
    Membership.objects.create(user=editor, organization=org, role=Role.EDITOR)
    api = APIClient()
    api.force_authenticate(editor)
    for run, approved in zip(decided[:2], (True, False), strict=True):
        answer = api.post(f"/api/runs/{run.pk}/approve/", {"step": "ok", "approved": approved}, format="json")
        assert answer.status_code == 200
        wait_for_run(run.pk, {"succeeded"}, worker=stack)

    Run.objects.filter(pk=runs["delay"].pk).update(created_at=timezone.now() - timedelta(days=3))
    m = scrape()
    assert value(m, "potaflow_oldest_unfinished_run_age_seconds") < 3600  # a waiting run is not behind
    waiting = {kind: value(m, "potaflow_runs_waiting", kind=kind) for kind in ("delay", "webhook", "approval")}
    assert waiting == {"delay": 1, "webhook": 1, "approval": 1}
    assert value(m, "potaflow_runs_unfinished", status="waiting") == 3
    accepted = sum(v for (name, _), v in m.items() if name == "potaflow_events_accepted_total")
    finished = sum(v for (name, _), v in m.items() if name == "potaflow_runs_finished_total")
    unfinished = sum(v for (name, _), v in m.items() if name == "potaflow_runs_unfinished")
    assert accepted == finished + unfinished and unfinished >= 3  # conservation, waiting runs included

    def delta(name, **labels):
        return value(m, name, **labels) - before.get((name, tuple(sorted(labels.items()))), 0)

    assert delta("potaflow_loop_iterations_total", status="succeeded") == 2
    assert delta("potaflow_loop_iterations_total", status="filtered") == 1
    assert delta("potaflow_approvals_total", decision="approved") == 1
    assert delta("potaflow_approvals_total", decision="refused") == 1

    text = status_text()
    assert "Waiting:      3 run(s): delay 1, webhook 1, approval 1" in text
    due = text.split("Waits due next:")[1].split("Retention")[0].strip().splitlines()
    assert "webhook  hold of run " + str(runs["webhook"].pk) in due[0]  # its timeout (300 s) comes first
    assert "delay    hold of run " + str(runs["delay"].pk) in due[1]
    assert len(due) == 2  # the approval has no timeout: counted, not listed
    data = json.loads(status_text("--json", "--waits", "1"))
    assert [w["run_id"] for w in data["waits"]] == [str(runs["webhook"].pk)]
    assert data["waiting_by_kind"] == {"delay": 1, "webhook": 1, "approval": 1}

    # Deleting a workflow with a decided and a waiting approval keeps the counters and the conservation.
    workflow_delete(workflow=approval)
    after = scrape()
    assert value(after, "potaflow_approvals_total", decision="approved") == value(
        m, "potaflow_approvals_total", decision="approved"
    )
    accepted = sum(v for (name, _), v in after.items() if name == "potaflow_events_accepted_total")
    finished = sum(v for (name, _), v in after.items() if name == "potaflow_runs_finished_total")
    unfinished = sum(v for (name, _), v in after.items() if name == "potaflow_runs_unfinished")
    assert accepted == finished + unfinished and value(after, "potaflow_runs_waiting", kind="approval") == 0


def status_text(*args):
    out = StringIO()
    call_command("potaflow_status", *args, stdout=out)
    return out.getvalue()
