"""Stored outputs and rendered configs are capped, and the run says which ones were cut."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Role, User
from workflows.execution import engine
from workflows.execution.recording import TRUNCATION_MARKER
from workflows.models import Run
from workflows.services import run_accept, workflow_create
from workflows.tests.conftest import make_user

pytestmark = pytest.mark.django_db


def test_cut_outputs_and_configs_are_reported_by_the_api_and_the_admin(org, settings):
    settings.POTAFLOW_ORG_MAX_RUNNING_STEPS = 0
    settings.POTAFLOW_STEP_OUTPUT_MAX_BYTES = 4096
    wf = workflow_create(
        organization=org,
        name="Big",
        steps=[
            {"key": "big_output", "action_type": "custom",
             "config": {"handler": "test.big", "input": {"size": 50_000}}},
            {"key": "big_config", "action_type": "custom",
             "config": {"handler": "test.big", "input": {"size": 10, "pad": "{{ 'y' * 20000 }}"}}},
            {"key": "small", "action_type": "custom", "config": {"handler": "test.big", "input": {"size": 10}}},
        ],
    )  # fmt: skip
    run, _ = run_accept(workflow=wf, trigger="manual", payload={})
    for position in range(3):
        engine.run_step(run.pk, position, message_id=f"m-{position}")
    run = Run.objects.get(pk=run.pk)
    assert run.status == "succeeded"
    rows = {s.key: s for s in run.step_runs.all()}
    assert rows["big_output"].output[TRUNCATION_MARKER] is True and rows["big_output"].output["size_bytes"] > 50_000
    assert rows["big_config"].rendered_config[TRUNCATION_MARKER] is True
    assert len(rows["big_config"].rendered_config["preview"]) < 4096
    assert rows["small"].output == {"blob": "x" * 10}

    viewer = make_user(org, Role.VIEWER, "v@example.com")
    api = APIClient()
    api.force_authenticate(viewer)
    steps = {s["key"]: s["truncated"] for s in api.get(f"/api/runs/{run.pk}/").json()["steps"]}
    assert steps == {"big_output": ["output"], "big_config": ["rendered_config"], "small": []}

    User.objects.filter(pk=viewer.pk).update(is_staff=True)
    admin = Client()
    admin.force_login(User.objects.get(pk=viewer.pk))
    page = admin.get(f"/admin/workflows/run/{run.pk}/change/").content.decode()
    assert page.count("(truncated: too large to store)") == 2
