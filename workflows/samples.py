"""Test data from the real world: "listen for a test event" and the samples a workflow keeps.

``listen_start`` opens a window (``POTAFLOW_LISTEN_SECONDS``, 300) during which the
next webhook to the workflow — even an inactive one — is kept as a sample and
**not run**: ``capture`` closes the window with one conditional UPDATE, so of two
events arriving together exactly one is captured. Samples are the trigger as
templates see it (``method``, ``headers`` — already redacted — ``query``, ``body``,
``content_type``); a workflow keeps its newest ``POTAFLOW_SAMPLES_PER_WORKFLOW`` (5).
The builder offers them in its sample box and data picker.
"""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from integrations import storable

from .models import Workflow, WorkflowSample

MAX_NAME = 100


def listen_start(*, workflow: Workflow) -> datetime:
    """Capture the next webhook of ``workflow`` (instead of running it) until the returned time."""
    until = timezone.now() + timedelta(seconds=settings.POTAFLOW_LISTEN_SECONDS)
    Workflow.objects.filter(pk=workflow.pk).update(listening_until=until)
    workflow.listening_until = until
    return until


def listen_stop(*, workflow: Workflow) -> None:
    Workflow.objects.filter(pk=workflow.pk).update(listening_until=None)
    workflow.listening_until = None


def capture(*, workflow: Workflow, payload: dict[str, Any]) -> WorkflowSample | None:
    """Keep ``payload`` as a sample if the workflow is listening now (and stop listening); else None.

    Raises ``storable.NotStorable`` (before anything changes) for a payload the database cannot hold.
    """
    storable.ensure(payload, path="trigger")
    now = timezone.now()
    with transaction.atomic():
        if not Workflow.objects.filter(pk=workflow.pk, listening_until__gt=now).update(listening_until=None):
            return None
        return _keep(workflow, name=f"Captured {now:%Y-%m-%d %H:%M:%S} UTC", payload=payload, source="captured")


def sample_save(*, workflow: Workflow, name: str, body: Any) -> WorkflowSample:
    """A named sample typed in the builder (its body; the rest shaped as a webhook's)."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["Name the sample."]})
    if len(name) > MAX_NAME:
        raise ValidationError({"name": [f"A sample name has at most {MAX_NAME} characters."]})
    payload = {"method": "POST", "headers": {}, "query": {}, "content_type": "application/json", "body": body}
    try:
        storable.ensure(payload, path="sample")
    except storable.NotStorable as exc:
        raise ValidationError({"body": [f"{exc}."]}) from None
    with transaction.atomic():
        return _keep(workflow, name=name, payload=payload, source="saved")


def _keep(workflow: Workflow, *, name: str, payload: dict[str, Any], source: str) -> WorkflowSample:
    sample = WorkflowSample.objects.create(workflow=workflow, name=name, payload=payload, source=source)
    keep = settings.POTAFLOW_SAMPLES_PER_WORKFLOW
    stale = (
        WorkflowSample.objects.filter(workflow=workflow)
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)[keep:]
    )
    WorkflowSample.objects.filter(pk__in=list(stale)).delete()
    return sample


def samples_of(workflow: Workflow) -> list[WorkflowSample]:
    return list(WorkflowSample.objects.filter(workflow=workflow).order_by("-created_at", "-id"))
