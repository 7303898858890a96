"""The live run view: ``/runs/<id>/live`` (HTML) and ``/runs/<id>/live.json`` (its state).

The page renders the run once on the server, then a few lines of plain
JavaScript poll ``live.json`` about once a second and update the step rows in
place, until the JSON says ``finished``. Polling rather than Server-Sent
Events: each poll is one short request, so it works behind any proxy and with
gunicorn's sync workers (an SSE stream would pin a worker for as long as a run
retries, which can be minutes), it survives a restarted web process without
any reconnect logic, and it needs no JavaScript library. A 401/403/404 from
``live.json`` (session expired, access or run gone) stops the polling and
offers a link to log in again; other failures are retried with a backoff.

Both views use the session of the member pages or the admin (a user must be
signed in; the login link goes to ``/app/login/``, which every member can use) and are scoped to
the user's organizations: another organization's run is a 404, exactly as in
the API and the admin. Editors get the Replay choice ("as it ran" or "with the
current version") once the run has failed or was filtered; it posts to the
member pages' replay view, which opens the new run's live view.
"""

from typing import Any

from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accounts.models import Role
from accounts.permissions import signed_in
from accounts.selectors import membership_for
from core.errors import error_response

from .admin.widgets import human_duration
from .models import Run, StepRun
from .selectors import runs_visible_to

POLL_INTERVAL_MS = 1000


def _get_run(request: HttpRequest, run_id: Any) -> Run:
    run = runs_visible_to(signed_in(request.user)).filter(pk=run_id).first()
    if run is None:
        raise Http404("No run with this id in your organizations.")
    return run


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def step_state(step: StepRun) -> dict[str, Any]:
    return {
        "position": step.position,
        "key": step.key,
        "action_type": step.action_type,
        "status": step.status,
        "attempts": step.attempts,
        "duration_ms": step.duration_ms,
        "started_at": _iso(step.started_at),
        "finished_at": _iso(step.finished_at),
        "next_attempt_at": _iso(step.next_attempt_at),
        "reused": step.reused,
        "error": step.error,
        "rendered_config": step.rendered_config,
        "output": step.output,
        "attempt_log": [
            {
                "number": attempt.number,
                "outcome": attempt.outcome,
                "started_at": _iso(attempt.started_at),
                "finished_at": _iso(attempt.finished_at),
                "duration_ms": attempt.duration_ms,
                "error": attempt.error,
            }
            for attempt in step.attempt_log.all()
        ],
    }


def run_state(run: Run) -> dict[str, Any]:
    """What the page shows; ``finished`` tells the page to stop polling."""
    return {
        "id": str(run.pk),
        "workflow": {"id": run.workflow_id, "name": run.workflow.name},
        "trigger": run.trigger,
        "status": run.status,
        "finished": run.is_finished,
        "replayable": run.is_replayable,
        "dead_lettered": run.dead_lettered,
        "error": run.error,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_ms": run.duration_ms,
        "replay_of": str(run.replay_of_id) if run.replay_of_id else None,
        "steps": [step_state(step) for step in run.step_runs.order_by("position").prefetch_related("attempt_log")],
    }


@require_GET
@never_cache
@login_required
def run_live(request: HttpRequest, run_id: Any) -> HttpResponse:
    """The admin's live view (staff); members are sent to the member pages' one (``/app/runs/<id>/live/``)."""
    run = _get_run(request, run_id)  # another organization's run: 404 before anything else
    if not request.user.is_staff:
        return redirect(f"/app/runs/{run.pk}/live/")
    state = run_state(run)
    for step in state["steps"]:
        step["duration_text"] = human_duration(step["duration_ms"])
    context = {
        **admin.site.each_context(request),
        "title": f"Run {run.pk}",
        "run": run,
        "state": state,
        "run_duration": human_duration(state["duration_ms"]),
        "state_url": reverse("workflows:run-live-state", kwargs={"run_id": run.pk}),
        "admin_url": reverse("admin:workflows_run_change", args=[run.pk]) if _admin_has_runs() else None,
        "poll_interval_ms": POLL_INTERVAL_MS,
        "can_replay": _may_replay(request, run),
        "replays": list(run.replays.order_by("created_at")),
    }
    return render(request, "workflows/run_live.html", context)


@require_GET
@never_cache
def run_live_state(request: HttpRequest, run_id: Any) -> JsonResponse:
    # A JSON endpoint answers 401 in the API's error shape rather than redirecting to a login page.
    if not request.user.is_authenticated:
        return error_response("Authentication credentials were not provided.", 401)
    run = runs_visible_to(request.user).filter(pk=run_id).first()
    if run is None:
        return error_response("No run with this id in your organizations.", 404)
    return JsonResponse(run_state(run))


def _may_replay(request: HttpRequest, run: Run) -> bool:
    """Editors and above (the replay form posts to the member pages, which check it again)."""
    membership = membership_for(request.user, run.workflow.organization_id)
    return membership is not None and membership.has_role(Role.EDITOR)


def _admin_has_runs() -> bool:
    return admin.site.is_registered(Run)
