"""Failure notices: the people who look after a workflow hear when its runs fail, without fifty messages.

Per workflow (``notify_on_failure``, on by default): the first failed run of a
burst sends a notice at once; the failures after it, while notices were sent
less than ``POTAFLOW_FAILURE_NOTICE_INTERVAL_SECONDS`` (3600) ago, are counted
and sent as one digest when the interval has passed (beat's
``workflows.send_failure_digests``). Each message links to the failed run's
page, where its Replay button is.

Who hears: the organization's editors, admins and owners (verified, active) by
system e-mail (``accounts.mail``); or, when the workflow names a Slack channel
and a Slack credential or connection of its organization (a kind the
``slack.message`` action accepts: ``notify_slack_channel`` +
``notify_slack_credential``), that channel — posted by that action's own code.

A notice never loops into a workflow: it is sent by this module, not by a run,
and a notice that cannot be sent is logged, never notified about.
"""

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import mail
from accounts.models import Membership, Role

from .models import FailureNoticeState, Run, Workflow

logger = logging.getLogger(__name__)

EDITOR_ROLES = (Role.EDITOR, Role.ADMIN, Role.OWNER)


def _interval() -> timedelta:
    return timedelta(seconds=settings.POTAFLOW_FAILURE_NOTICE_INTERVAL_SECONDS)


def run_failed(run_id: Any) -> str:
    """A run failed: notify now (first of a burst) or count it for the next digest. Returns what was done."""
    run = Run.objects.select_related("workflow", "workflow__organization").filter(pk=run_id).first()
    if run is None:
        return "nothing: the run is gone"
    workflow = run.workflow
    if not workflow.notify_on_failure:
        return "nothing: notices are off for this workflow"
    now = timezone.now()
    with transaction.atomic():
        FailureNoticeState.objects.get_or_create(workflow=workflow)
        state = FailureNoticeState.objects.select_for_update().get(workflow=workflow)
        if state.last_sent_at is not None and now - state.last_sent_at < _interval():
            state.pending_count += 1
            state.pending_since = state.pending_since or now
            state.latest_run_id = run.pk
            state.save(update_fields=["pending_count", "pending_since", "latest_run_id"])
            return "counted for the digest"
        state.last_sent_at = now
        state.save(update_fields=["last_sent_at"])
    _deliver(workflow, *_notice(workflow, run))
    return "notice sent"


def send_digests() -> int:
    """Send the digest of every workflow whose failures waited the interval; returns how many were sent."""
    due = FailureNoticeState.objects.filter(pending_count__gt=0, last_sent_at__lte=timezone.now() - _interval())
    sent = 0
    for workflow_id in due.values_list("workflow_id", flat=True):
        with transaction.atomic():
            state = (
                FailureNoticeState.objects.select_for_update()
                .select_related("workflow", "workflow__organization")
                .filter(workflow_id=workflow_id, pending_count__gt=0)
                .first()
            )
            if state is None:
                continue
            count, since, latest = state.pending_count, state.pending_since, state.latest_run_id
            state.pending_count, state.pending_since, state.latest_run_id = 0, None, None
            state.last_sent_at = timezone.now()
            state.save(update_fields=["pending_count", "pending_since", "latest_run_id", "last_sent_at"])
        if state.workflow.notify_on_failure:
            _deliver(state.workflow, *_digest(state.workflow, count, since, latest))
            sent += 1
    return sent


# The member pages' paths, written out: the worker never loads the URL configuration (a test checks them).
RUN_PAGE = "/app/runs/{}/"
RUN_LIST = "/app/runs/"


def _run_link(run_id: uuid.UUID | None) -> str:
    return mail.absolute_url(RUN_PAGE.format(run_id)) if run_id else ""


def _notice(workflow: Workflow, run: Run) -> tuple[str, str]:
    subject = f"PotaFlow: “{workflow.name}” failed"
    when = run.finished_at or timezone.now()
    text = (
        f"A run of “{workflow.name}” ({workflow.organization.name}) failed at {when:%Y-%m-%d %H:%M} UTC"
        f"{' and was dead-lettered' if run.dead_lettered else ''}:\n\n{run.error or 'no error recorded'}\n\n"
        f"See the run, and replay it once the cause is fixed:\n{_run_link(run.pk)}\n\n"
        f"More failures of this workflow in the next {_interval_words()} come as one digest, not one message each.\n"
        f"Turn these notices off in the workflow's settings (“Notify on failure”).\n"
    )
    return subject, text


def _digest(workflow: Workflow, count: int, since: Any, latest: uuid.UUID | None) -> tuple[str, str]:
    subject = f"PotaFlow: “{workflow.name}” failed {count} more time{'s' if count != 1 else ''}"
    runs = mail.absolute_url(RUN_LIST) + f"?org={workflow.organization_id}&workflow={workflow.pk}&status=failed"
    text = (
        f"{count} more run{'s' if count != 1 else ''} of “{workflow.name}” ({workflow.organization.name}) failed"
        f" since {since:%Y-%m-%d %H:%M} UTC.\n\nThe latest, with its Replay button:\n{_run_link(latest)}\n\n"
        f"All failed runs of this workflow:\n{runs}\n"
    )
    return subject, text


def _interval_words() -> str:
    seconds = settings.POTAFLOW_FAILURE_NOTICE_INTERVAL_SECONDS
    return f"{seconds // 3600} hour{'s' if seconds // 3600 != 1 else ''}" if seconds % 3600 == 0 else f"{seconds} s"


def recipients(workflow: Workflow) -> list[str]:
    """The organization's editors, admins and owners who can sign in."""
    return list(
        Membership.objects.filter(
            organization_id=workflow.organization_id,
            role__in=EDITOR_ROLES,
            user__is_active=True,
            user__email_verified_at__isnull=False,
        )
        .order_by("user__email")
        .values_list("user__email", flat=True)
    )


def _deliver(workflow: Workflow, subject: str, text: str) -> None:
    """To the Slack channel when one is set up, else by e-mail; a failure is logged, never notified about."""
    try:
        if workflow.notify_slack_channel and workflow.notify_slack_credential_id:
            _post_to_slack(workflow, f"*{subject}*\n{text}")
        else:
            to = recipients(workflow)
            if to:
                mail.send(to=to, subject=subject, text=text)
    except Exception:  # noqa: BLE001 - a notice must never fail the run path nor start another notice
        logger.exception("failure notice for workflow %s could not be sent", workflow.pk)


def _post_to_slack(workflow: Workflow, text: str) -> None:
    """The hook for Slack: the ``slack.message`` action with the chosen credential (same guard, same API URL)."""
    # Deferred: the integrations registry and credential decryption are only needed for Slack notices.
    from integrations.base import ActionContext
    from integrations.models import Credential
    from integrations.registry import get_action
    from integrations.services import credential_for_step

    credential = Credential.objects.filter(
        pk=workflow.notify_slack_credential_id or 0, organization_id=workflow.organization_id
    ).first()
    if credential is None:
        raise LookupError("the Slack credential of the failure notices is gone")
    # A bot token or a Slack connection (its token refreshed if due), as a step would get it.
    secret = credential_for_step(credential, timeout=30.0)
    ctx = ActionContext(
        run_id=f"notice-{uuid.uuid4()}",
        workflow_id=workflow.pk,
        organization_id=workflow.organization_id,
        step_key="failure_notice",
        credential=secret.fields,
        credential_kind=secret.kind,
    )
    get_action("slack.message").run({"channel": workflow.notify_slack_channel, "text": text}, ctx)
