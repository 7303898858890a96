"""One replay rule (``Run.is_replayable``), four surfaces: for every run state the API, the admin,
the member pages and the live view give the same answer, both in what they show and in what a
replay request gets. Written once in a table, so the surfaces can never disagree again."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Membership, Organization, Role, User
from workflows.models import Run, RunStatus, StepRun, StepRunStatus, TriggerType
from workflows.services import run_accept, workflow_create

pytestmark = pytest.mark.django_db

STRAIGHT = [
    {"key": "shape", "action_type": "transform", "config": {"value": 1}},
    {"key": "send", "action_type": "transform", "config": {"value": "{{ steps.shape.output }}"}},
]
# continue_on_error makes it a flow (issue 19): replayed by the flow rules, from the failed instance.
FLOW = [STRAIGHT[0], {**STRAIGHT[1], "continue_on_error": True}]

# (run status, dead-lettered, the last step's status) -> replayable?
STATES = [
    (RunStatus.QUEUED, False, StepRunStatus.PENDING, False),
    (RunStatus.RUNNING, False, StepRunStatus.RUNNING, False),
    (RunStatus.WAITING, False, StepRunStatus.PENDING, False),
    (RunStatus.SUCCEEDED, False, StepRunStatus.SUCCEEDED, False),
    (RunStatus.FAILED, False, StepRunStatus.FAILED, True),
    (RunStatus.FAILED, True, StepRunStatus.FAILED, True),  # dead-lettered: a person decides to replay
    (RunStatus.FILTERED, False, StepRunStatus.FILTERED, True),
]


@pytest.fixture
def org():
    return Organization.objects.create(name="Acme", slug="acme")


@pytest.fixture
def user(org):
    """An editor who is also staff: the one person who can use all four surfaces."""
    user = User.objects.create_user(email="ed@acme.test", password="pw-long-enough-123", is_staff=True)
    Membership.objects.create(user=user, organization=org, role=Role.EDITOR)
    return user


def a_run(org, steps, status, dead_lettered, last):
    workflow = workflow_create(organization=org, name="Hook", trigger_type=TriggerType.WEBHOOK, steps=steps)
    run, _ = run_accept(workflow=workflow, trigger="webhook", payload={"body": {}})
    if status != RunStatus.QUEUED:
        StepRun.objects.filter(run=run, key="shape").update(status=StepRunStatus.SUCCEEDED, output=1)
    StepRun.objects.filter(run=run, key="send").update(status=last, error="boom" if last == "failed" else "")
    Run.objects.filter(pk=run.pk).update(status=status, dead_lettered=dead_lettered)
    run.refresh_from_db()
    return run


def shown(user, run):
    """What each surface shows for the run: may it be replayed?"""
    api, browser = APIClient(), Client()
    api.force_authenticate(user)
    browser.force_login(user)
    member_live = browser.get(f"/app/runs/{run.pk}/live/").content.decode()
    admin_live = browser.get(f"/runs/{run.pk}/live").content.decode()
    return {
        "api field": api.get(f"/api/runs/{run.pk}/").json()["replayable"],
        "admin button": 'id="pf-admin-replay"' in _page(browser, f"/admin/workflows/run/{run.pk}/change/"),
        "member page button": 'id="pf-replay-current"' in browser.get(f"/app/runs/{run.pk}/").content.decode(),
        "live state": browser.get(f"/runs/{run.pk}/live.json").json()["replayable"],
        # The live pages render the form hidden unless replayable; live.js shows it from live.json.
        "member live form": 'id="pf-replay" method="post"' in member_live and "hidden>" not in _form(member_live),
        "admin live form": 'id="pf-replay" method="post"' in admin_live and "hidden>" not in _form(admin_live),
    }


def _page(browser, url):
    return browser.get(url).content.decode()


def _form(html):
    start = html.index('<form id="pf-replay"')
    return html[start : html.index(">", start) + 1]


def answered(user, run):
    """What each surface does when asked to replay it: did a replay start?"""
    api, browser = APIClient(), Client()
    api.force_authenticate(user)
    browser.force_login(user)
    before = Run.objects.filter(replay_of=run).count()
    result = {}
    response = api.post(f"/api/runs/{run.pk}/replay/", {}, format="json")
    assert response.status_code in (201, 400), response.content
    result["api replay"] = response.status_code == 201
    urls = {"admin replay": f"/admin/workflows/run/{run.pk}/replay/", "member replay": f"/app/runs/{run.pk}/replay/"}
    for name, url in urls.items():
        count = Run.objects.filter(replay_of=run).count()
        assert browser.post(url, {"version": "original"}).status_code == 302
        result[name] = Run.objects.filter(replay_of=run).count() == count + 1
    assert Run.objects.filter(replay_of=run).count() == before + sum(result.values())
    return result


@pytest.mark.parametrize("steps", [STRAIGHT, FLOW], ids=["straight", "flow"])
@pytest.mark.parametrize(("status", "dead_lettered", "last", "replayable"), STATES)
def test_every_surface_gives_the_same_replay_answer(org, user, steps, status, dead_lettered, last, replayable):
    run = a_run(org, steps, status, dead_lettered, last)
    assert run.is_replayable is replayable
    assert shown(user, run) == dict.fromkeys(shown(user, run), replayable)
    assert answered(user, run) == dict.fromkeys(("api replay", "admin replay", "member replay"), replayable)
