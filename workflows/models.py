"""Workflows, their steps, and the history of every run.

A ``Workflow`` is one trigger followed by ordered ``Step`` rows. Every saved
definition is a ``WorkflowVersion`` row, stored once however many runs execute
it. Each event becomes a ``Run`` pointing at the version it was accepted with
(so an edit never changes a run in flight) and one ``StepRun`` per step: the
history is the product, every attempt leaves its trace there.

All writes go through ``workflows.services``; execution lives in ``workflows.execution.engine``.
"""

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .intake.signatures import HmacAlgorithm, HmacEncoding, SignatureScheme


def new_webhook_token() -> str:
    """43 URL-safe characters (256 bits): unguessable, so the URL is the capability."""
    return secrets.token_urlsafe(32)


# A step's retry policy and time budget when the definition does not say:
# the one source for the model, the services, the API and the engine.
STEP_DEFAULTS = {"max_retries": 3, "backoff_seconds": 2.0, "backoff_max_seconds": 300.0, "timeout_seconds": 30.0}
STEP_POLICY_FIELDS = tuple(STEP_DEFAULTS)
# What a step definition holds besides its position and credential (services and snapshots list these).
STEP_SPEC_FIELDS = ("key", "action_type", "config", *STEP_POLICY_FIELDS, "on_in_doubt", "continue_on_error")


class InDoubtPolicy(models.TextChoices):
    """What happens to a step whose worker died mid-call (the effect may or may not have happened)."""

    RETRY = "retry", "Retry (the action makes a repeat safe)"
    DEAD_LETTER = "dead_letter", "Dead-letter the run (a person decides)"


class TriggerType(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"


class Workflow(models.Model):
    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="workflows")
    name = models.CharField(max_length=150)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    trigger_type = models.CharField(max_length=16, choices=TriggerType.choices, default=TriggerType.MANUAL)
    webhook_token = models.CharField(max_length=64, unique=True, default=new_webhook_token, editable=False)
    webhook_secret = models.CharField(
        max_length=128,
        blank=True,
        help_text="Optional. When set, webhook requests must be signed with it (see signature_scheme).",
    )
    signature_scheme = models.CharField(
        max_length=16,
        choices=SignatureScheme.choices,
        default=SignatureScheme.STANDARD,
        help_text="How webhook requests are signed when a secret is set.",
    )
    webhook_secret_previous = models.CharField(
        max_length=128,
        blank=True,
        help_text="Optional. Also accepted while senders move to a new webhook_secret (rotation).",
    )
    hmac_header = models.CharField(
        max_length=64, blank=True, help_text="hmac scheme: the header holding the signature, e.g. X-Signature."
    )
    hmac_algorithm = models.CharField(
        max_length=8, choices=HmacAlgorithm.choices, default=HmacAlgorithm.SHA256, help_text="hmac scheme."
    )
    hmac_encoding = models.CharField(
        max_length=8, choices=HmacEncoding.choices, default=HmacEncoding.HEX, help_text="hmac scheme."
    )
    hmac_prefix = models.CharField(
        max_length=32, blank=True, help_text='hmac scheme: text before the digest, e.g. "sha256=".'
    )
    webhook_body_as_file = models.BooleanField(
        default=False,
        help_text="Keep a webhook body that is not JSON, a form or text (an image, a PDF, a zip...) as a file, "
        "trigger.files.body, streamed to the file storage (instead of base64 in trigger.body).",
    )
    schedule = models.CharField(max_length=100, blank=True, help_text='5-field cron expression, e.g. "*/5 * * * *".')
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA time zone of the schedule.")
    version = models.PositiveIntegerField(default=1, editable=False)
    # Failure notices (workflows.notices): the editors by e-mail, or a Slack channel through a
    # slack_bot_token credential of the organization when one is chosen. Not part of a version.
    notify_on_failure = models.BooleanField(
        default=True, help_text="Tell the workflow's editors when a run fails (once per burst, then hourly digests)."
    )
    notify_slack_credential = models.ForeignKey(
        "integrations.Credential", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    notify_slack_channel = models.CharField(
        max_length=80, blank=True, help_text="Post failure notices to this Slack channel instead of e-mailing."
    )
    # The error path (issue 19): steps run once when a run fails, with failure.step/error/attempts
    # in their templates. Same shape as ``steps`` (specs, credentials by id); part of a version.
    on_failure = models.JSONField(default=list, blank=True)
    # "Listen for a test event": until then, the next webhook is kept as a sample and not run.
    listening_until = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization_id", "name", "id"]
        indexes = [models.Index(fields=["organization", "name"], name="workflow_org_name_idx")]

    def __str__(self) -> str:
        return self.name

    @property
    def periodic_task_name(self) -> str:
        return f"potaflow-workflow-{self.pk}"


class Step(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField()
    key = models.SlugField(max_length=64, help_text="Unique in its workflow; templates use steps.<key>.output.")
    action_type = models.CharField(max_length=64)
    config = models.JSONField(default=dict, blank=True)
    credential = models.ForeignKey(
        "integrations.Credential", on_delete=models.SET_NULL, null=True, blank=True, related_name="steps"
    )
    max_retries = models.PositiveIntegerField(default=STEP_DEFAULTS["max_retries"])
    backoff_seconds = models.FloatField(default=STEP_DEFAULTS["backoff_seconds"])
    backoff_max_seconds = models.FloatField(default=STEP_DEFAULTS["backoff_max_seconds"])
    timeout_seconds = models.FloatField(default=STEP_DEFAULTS["timeout_seconds"])
    on_in_doubt = models.CharField(
        max_length=16,
        choices=InDoubtPolicy.choices,
        blank=True,
        default="",
        help_text="When the outcome of an attempt is unknown (its worker died mid-call). "
        "Blank: the action's default (retry when it makes repeats safe, else dead-letter).",
    )
    continue_on_error = models.BooleanField(
        default=False,
        help_text="When the step fails (after its retries), record the failure and go on with the next step "
        "instead of failing the run.",
    )

    class Meta:
        ordering = ["workflow_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "position"], name="unique_step_position"),
            models.UniqueConstraint(fields=["workflow", "key"], name="unique_step_key"),
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.key} ({self.action_type})"


class WorkflowVersion(models.Model):
    """One definition of a workflow (its ``version`` number), shared by every run that executes it.

    Runs used to copy the definition into their own row: a 2 MB definition cost
    2 MB per webhook. Rows are written by ``workflows.services`` and never
    changed; ``workflows.ops.retention`` deletes the superseded ones no run uses.
    """

    # No index of its own: the unique (workflow, number) starts with it.
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions", db_index=False)
    number = models.PositiveIntegerField()
    definition = models.JSONField(default=dict, help_text="The workflow and steps runs of this version execute.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["workflow_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="unique_workflow_version_number"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} v{self.number}"


class RunTrigger(models.TextChoices):
    """What started a run: one of the workflow trigger types (a manual run is possible for every
    workflow), or a replay of an earlier run.

    A class rather than ``TextChoices("RunTrigger", [...])`` built from ``TriggerType``, so type
    checkers know its members; each takes its value and label from ``TriggerType``, and a test
    holds the two sets of members together.
    """

    WEBHOOK = TriggerType.WEBHOOK.value, TriggerType.WEBHOOK.label
    SCHEDULE = TriggerType.SCHEDULE.value, TriggerType.SCHEDULE.label
    MANUAL = TriggerType.MANUAL.value, TriggerType.MANUAL.label
    REPLAY = "replay", "Replay"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    FILTERED = "filtered", "Filtered"
    # Paused at a delay or wait step (issue 19): resumed by the wake-up task, a resume URL or an approval.
    WAITING = "waiting", "Waiting"


UNFINISHED_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING)
# Unfinished runs the recovery sweeper may find stalled: a waiting run makes progress only when woken.
ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
# THE replay rule (``Run.is_replayable``): a run that ended without succeeding. Dead-lettered runs are
# failed ones. The API, the admin, the member pages and the live view all ask ``is_replayable``.
REPLAYABLE_RUN_STATUSES = (RunStatus.FAILED, RunStatus.FILTERED)


class Run(models.Model):
    # A UUID: run ids appear in public answers and in broker messages, and must
    # never collide with a stale message from an earlier database.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: (workflow, created_at, id) and the idempotency key's unique index start with it.
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="runs", db_index=False)
    workflow_version = models.PositiveIntegerField()
    # The definition this run executes. RESTRICT: a version cannot go while a run
    # uses it (deleting the workflow deletes both).
    version = models.ForeignKey(WorkflowVersion, on_delete=models.RESTRICT, related_name="runs")
    trigger = models.CharField(max_length=16, choices=RunTrigger.choices)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    dead_lettered = models.BooleanField(default=False)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    replay_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replays")
    # A replay of a flow run (issue 19): the path of the instance it starts at ("lines[1]/ratio"); the
    # instances of ``replay_of`` that succeeded before it are reused (workflows.execution.flow).
    replay_from = models.CharField(max_length=512, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Last step progress, or the time of the next scheduled retry: what the
    # recovery sweeper compares with POTAFLOW_STALLED_AFTER_SECONDS.
    last_progress_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The run lists (API keyset pages, the admin) order by -created_at, -id; each
            # filter they offer has an index in that order, so a page reads only its rows.
            models.Index(fields=["-created_at", "-id"], name="run_created_id_idx"),
            models.Index(fields=["workflow", "-created_at", "-id"], name="run_workflow_created_id_idx"),
            models.Index(fields=["status", "-created_at", "-id"], name="run_status_created_id_idx"),
            models.Index(fields=["trigger", "-created_at", "-id"], name="run_trigger_created_id_idx"),
            models.Index(
                fields=["dead_lettered", "-created_at"],
                name="run_dead_letter_idx",
                condition=Q(dead_lettered=True),
            ),
            models.Index(
                fields=["last_progress_at"],
                name="run_unfinished_idx",
                condition=Q(status__in=["queued", "running"]),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "idempotency_key"],
                name="unique_run_idempotency_key",
                condition=Q(idempotency_key__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        # Admin querysets select_related("workflow"), so the name costs no query per row there.
        return f"Run {str(self.pk)[:8]} of {self.workflow.name} ({self.status})"

    @property
    def definition(self) -> dict:
        """The snapshot this run executes (its version's): query with ``select_related("version")``."""
        return self.version.definition

    @property
    def is_finished(self) -> bool:
        return self.status not in UNFINISHED_RUN_STATUSES

    @property
    def is_replayable(self) -> bool:
        """Whether a replay may be asked for: the one rule every surface shows and ``run_replay`` enforces.

        What a replay then starts at (a step, a flow instance) and whether its connections work are
        ``services.run_replay``'s checks of the request, not of the run.
        """
        return self.status in REPLAYABLE_RUN_STATUSES

    @property
    def duration_ms(self) -> int | None:
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds() * 1000)
        return None


class StepRunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    RETRYING = "retrying", "Retrying"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    # A filter whose condition was false: it ran, and it ended the run (which is filtered).
    FILTERED = "filtered", "Filtered"
    # A delay or wait paused at ``wake_at`` or for an outside event; a branch or loop whose nested
    # steps are under way (issue 19).
    WAITING = "waiting", "Waiting"
    # A step of a branch path the run did not take (display; no row is written for it by the engine).
    NOT_TAKEN = "not_taken", "Path not taken"


class StepRun(models.Model):
    # No index of its own: the unique (run, position) starts with it. Nothing looks step runs up by key.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="step_runs", db_index=False)
    position = models.PositiveIntegerField()
    key = models.SlugField(max_length=64, db_index=False)
    action_type = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=StepRunStatus.choices, default=StepRunStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    rendered_config = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="Start of the latest attempt.")
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Duration of the latest attempt.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Id of the Celery message that claimed the latest attempt: when that same
    # message comes back (requeued after its worker died) it may take the step
    # over; any other message finding the step running is a duplicate.
    claim_token = models.CharField(max_length=64, blank=True, editable=False)
    # While ``running``: the attempt's worker renews this lease; once it lapses
    # the worker is presumed dead and the step may be taken over.
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # True when the output was reused from the run this one replays.
    reused = models.BooleanField(default=False)
    # Flow control (issue 19). Where the instance sits in the tree: its key at the top level and in
    # branch paths, "lines[3]/ratio" inside a loop's iteration ("" on rows written before issue 19: the key).
    path = models.CharField(max_length=512, blank=True)
    # The branch or loop instance whose nested list this instance belongs to (None at the top level).
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True, related_name="children")
    # An instance of the workflow's on_failure steps: it runs although its run has failed.
    error_path = models.BooleanField(default=False)
    # A for_each instance: its items, the iterations started and finished (fan-in by atomic updates).
    loop_total = models.PositiveIntegerField(null=True, blank=True)
    loop_started = models.PositiveIntegerField(null=True, blank=True)
    loop_finished = models.PositiveIntegerField(null=True, blank=True)
    # A waiting delay or wait: when the wake-up task resumes it (the end of a delay, a wait's timeout).
    wake_at = models.DateTimeField(null=True, blank=True)
    # A waiting wait of kind webhook: the capability in its resume URL (workflows.execution.flow).
    resume_token = models.CharField(max_length=64, blank=True, editable=False)
    # A pending/retrying step whose organization was at its fair share while another organization had
    # work waiting: its message was dropped and it waits here, oldest first, until a slot of its
    # organization frees (workflows.execution.fairness). None: not parked.
    parked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When the sweeper last sent a take-over for this step's lapsed lease: one take-over per lease
    # period per step, whatever the rest of its run does (workflows.execution.dispatch).
    takeover_sent_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["run_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="unique_step_run_position"),
            # One instance per place in the tree: creating what follows a step twice writes nothing.
            models.UniqueConstraint(fields=["run", "path"], name="unique_step_run_path", condition=~Q(path="")),
        ]
        indexes = [
            models.Index(
                fields=["lease_expires_at"],
                name="step_run_running_lease_idx",
                condition=Q(status="running"),
            ),
            # What the wake-up task looks for: waits due.
            models.Index(fields=["wake_at"], name="step_run_wake_idx", condition=Q(status="waiting")),
            models.Index(fields=["resume_token"], name="step_run_resume_idx", condition=~Q(resume_token="")),
            # Parked steps, oldest first (few: only while organizations compete for the workers).
            models.Index(fields=["parked_at"], name="step_run_parked_idx", condition=Q(parked_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.key} ({self.status})"


class StepIteration(models.Model):
    """One item of a ``for_each`` instance: the item, its outcome and its result (issue 19)."""

    loop = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="iterations", db_index=False)
    index = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=StepRunStatus.choices, default=StepRunStatus.PENDING)
    item = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["loop_id", "index"]
        constraints = [models.UniqueConstraint(fields=["loop", "index"], name="unique_step_iteration_index")]

    def __str__(self) -> str:
        return f"item {self.index} ({self.status})"


class AttemptOutcome(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    RETRYABLE_ERROR = "retryable_error", "Retryable error"
    PERMANENT_ERROR = "permanent_error", "Permanent error"
    TIMED_OUT = "timed_out", "Timed out"
    # The worker died before the action could have had an effect (or the action has none).
    WORKER_LOST = "worker_lost", "Worker lost"
    # The worker died while the action may have been talking to its destination.
    IN_DOUBT = "in_doubt", "Outcome unknown"
    # It finished after a newer attempt had taken the step over; its result was not used.
    SUPERSEDED = "superseded", "Superseded"


class StepAttempt(models.Model):
    """One execution attempt of a step: written when it starts, closed when its outcome is known.

    An attempt left open (``outcome`` blank) by a worker that died is closed by
    whoever takes the step over, as ``in_doubt``, ``worker_lost`` or ``timed_out``.
    """

    # No index of its own: the unique (step_run, number) starts with it.
    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="attempt_log", db_index=False)
    number = models.PositiveIntegerField()
    outcome = models.CharField(max_length=24, choices=AttemptOutcome.choices, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    # What was sent, secrets redacted (method and URL, recipients, channel...).
    request = models.JSONField(null=True, blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    worker_host = models.CharField(max_length=255, blank=True)
    worker_pid = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["step_run_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["step_run", "number"], name="unique_step_attempt_number"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} ({self.outcome or 'running'})"


class WorkflowSample(models.Model):
    """A named trigger payload of a workflow (captured from a real webhook, or saved from the builder):
    what "test with sample data" and the data picker offer. A few per workflow (``POTAFLOW_SAMPLES_PER_WORKFLOW``)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="samples")
    name = models.CharField(max_length=100)
    payload = models.JSONField(help_text="The trigger as templates see it: method, headers, query, body, content_type.")
    source = models.CharField(max_length=16, default="captured")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["workflow_id", "-created_at", "-id"]
        indexes = [models.Index(fields=["workflow", "-created_at"], name="workflow_sample_recent_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.workflow_id})"


class FailureNoticeState(models.Model):
    """When a workflow's failure notice was last sent, and what failed since (for the next digest)."""

    workflow = models.OneToOneField(Workflow, on_delete=models.CASCADE, related_name="failure_notice_state")
    last_sent_at = models.DateTimeField(null=True, blank=True)
    pending_count = models.PositiveIntegerField(default=0)
    pending_since = models.DateTimeField(null=True, blank=True)
    latest_run_id = models.UUIDField(null=True, blank=True)

    def __str__(self) -> str:
        return f"notices of workflow {self.workflow_id}: {self.pending_count} pending"


class FileOrigin(models.TextChoices):
    UPLOAD = "upload", "Uploaded to a webhook"
    STEP = "step", "Written by a step"
    STORED = "stored", "Kept by file.store"


class FileState(models.TextChoices):
    UPLOADING = "uploading", "Being written"
    READY = "ready", "Ready"


class RunFile(models.Model):
    """A file kept outside the database (``workflows.files``): its storage key and what it is.

    The bytes live in the file storage (``POTAFLOW_FILE_STORAGE``) under ``key``,
    which PotaFlow makes up (never the name a sender chose). A row is written
    ``uploading`` *before* its bytes, so a process dying mid-write leaves a row
    the pruner finds (``POTAFLOW_UPLOAD_ABANDONED_SECONDS``), never an object
    nobody knows about. An upload or a step's file belongs to its run: deleting
    the run detaches it (``run`` becomes null) and the pruner's next pass
    deletes its bytes and row. ``stored`` files (``file.store``) are kept.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # SET_NULL, not CASCADE: the row must outlive a deletion until its bytes are deleted too.
    organization = models.ForeignKey("accounts.Organization", on_delete=models.SET_NULL, null=True, related_name="+")
    run = models.ForeignKey(Run, on_delete=models.SET_NULL, null=True, blank=True, related_name="files")
    origin = models.CharField(max_length=8, choices=FileOrigin.choices)
    state = models.CharField(max_length=10, choices=FileState.choices, default=FileState.UPLOADING)
    field = models.CharField(max_length=100, blank=True, help_text="The form field or step that gave it.")
    name = models.CharField(max_length=255, help_text="As sent (shown, never used as a path).")
    content_type = models.CharField(max_length=255, blank=True, help_text="As sent, not trusted.")
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    key = models.CharField(max_length=1024, unique=True, help_text="Where the bytes are in the file storage.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # What the pruner looks for: writes that never finished, and files whose run is gone.
            models.Index(fields=["created_at"], name="runfile_uploading_idx", condition=Q(state="uploading")),
            models.Index(fields=["created_at"], name="runfile_detached_idx", condition=Q(run__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.size} bytes)"


class MetricBaseline(models.Model):
    """What deleted runs and attempts had added to a ``/metrics`` counter or histogram series.

    ``/metrics`` derives its counters from rows at scrape time; retention (or a
    deleted workflow) removes rows, and a counter that goes down reads to
    Prometheus as a restart. Before runs are deleted, what they account for is
    added here (``workflows.ops.metrics.carry_over``, in the deleting
    transaction), and a scrape reports rows + baseline.
    """

    series = models.CharField(max_length=512, unique=True, help_text='JSON ["sample name", [["label", "value"], ...]].')
    value = models.FloatField(default=0)

    def __str__(self) -> str:
        return f"{self.series} = {self.value:g}"


class RollupGrain(models.TextChoices):
    """The width of an Insights bucket: hours for the last day, days beyond."""

    HOUR = "hour", "Hour"
    DAY = "day", "Day"


class RunRollup(models.Model):
    """Finished runs of one workflow, by the hour or day they were received in and by status.

    What Insights reads instead of the runs: written by database triggers in
    the very statement that finishes (or un-finishes) a run, whatever code
    path does it (migration ``*_insights_rollups``), never when a run is
    deleted, so the history outlives retention. ``durations`` counts the
    rows' durations in log buckets (``workflows.ops.insights.DURATION_BASE``):
    p50/p95 over any set of rows, to within 2.5 %.
    """

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    # No foreign key: an organization's history keeps the runs of a workflow deleted since.
    workflow_id = models.BigIntegerField()
    grain = models.CharField(max_length=4, choices=RollupGrain.choices)
    start = models.DateTimeField(help_text="Start (UTC) of the hour or day the runs were received in.")
    status = models.CharField(max_length=16)
    runs = models.IntegerField(default=0)
    dead_lettered = models.IntegerField(default=0)
    timed = models.IntegerField(default=0, help_text="Runs with a start and end time (the durations counted).")
    duration_ms_sum = models.BigIntegerField(default=0)
    durations = models.JSONField(default=dict, help_text='{"<log bucket>": runs}')

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workflow_id", "grain", "start", "status"], name="unique_run_rollup"),
        ]
        indexes = [models.Index(fields=["organization", "grain", "start"], name="run_rollup_org_idx")]

    def __str__(self) -> str:
        return f"{self.workflow_id} {self.grain} {self.start:%Y-%m-%d %H:%M} {self.status}: {self.runs}"


class StepFailureRollup(models.Model):
    """Step instances that failed, by workflow, hour or day their run was received in, step key and error
    (its first line, 200 characters): the "steps that fail most" of Insights. Written like ``RunRollup``."""

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    workflow_id = models.BigIntegerField()
    grain = models.CharField(max_length=4, choices=RollupGrain.choices)
    start = models.DateTimeField()
    step_key = models.CharField(max_length=64)
    action_type = models.CharField(max_length=64)
    error = models.CharField(max_length=200)
    failures = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workflow_id", "grain", "start", "step_key", "error"], name="unique_step_failure_rollup"
            ),
        ]
        indexes = [models.Index(fields=["organization", "grain", "start"], name="step_failure_rollup_org_idx")]

    def __str__(self) -> str:
        return f"{self.workflow_id} {self.step_key} {self.start:%Y-%m-%d %H:%M}: {self.failures}"


class SchedulerLease(models.Model):
    """Who may send schedule firings: one row per lease (``beat``), held by one beat process at a time.

    A lease row rather than an advisory lock: a session lock lives on one
    server connection, which PgBouncer's transaction pooling hands to other
    clients between transactions, and it dies silently with a cut connection.
    A row is renewed in single statements, works through any pooler, and its
    ``expires_at`` (the database's clock, never a host's) tells a standby
    when it may take over. ``term`` grows with every change of holder.
    See ``workflows.scheduling.leader``.
    """

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=200, help_text="host:pid:random of the beat process holding it.")
    term = models.BigIntegerField(default=1, help_text="Incremented at every change of holder.")
    acquired_at = models.DateTimeField()
    renewed_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.holder} (term {self.term}) until {self.expires_at:%H:%M:%S}"


class WorkerHeartbeat(models.Model):
    """A Celery worker's last report of itself: it is alive, and how much memory it holds.

    Workers serve no HTTP, so ``/metrics`` (any web process) reads their memory
    from here: each worker's main process writes its row every
    ``POTAFLOW_WORKER_HEARTBEAT_SECONDS`` (``workflows.ops.heartbeat``).
    """

    name = models.CharField(max_length=200, primary_key=True, help_text="Celery's node name, celery@<host>.")
    pid = models.IntegerField()
    rss_bytes = models.BigIntegerField(help_text="Resident memory of the main process and its pool children.")
    processes = models.IntegerField(default=1)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} ({self.rss_bytes // 2**20} MiB at {self.seen_at:%H:%M:%S})"


class TestRunStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    DONE = "done", "done"
    FAILED = "failed", "failed"


class TestRun(models.Model):
    """A test of a workflow with sample data (``workflows.dry_run``), executed by a worker, not a web thread.

    The web request creates the row and waits a bounded time for ``result``;
    a test that takes longer is polled. Unfinished rows count against the
    organization's ``POTAFLOW_TEST_RUN_MAX_CONCURRENT``; retention deletes
    rows after a day.
    """

    __test__ = False  # a model, not a pytest class

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # None: a workflow not saved yet (the builder of a new workflow); only its creator reads the result.
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, null=True, blank=True, related_name="test_runs")
    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    status = models.CharField(max_length=16, choices=TestRunStatus.choices, default=TestRunStatus.QUEUED)
    request = models.JSONField(help_text="payload, steps (unsaved specs or null), send_step")
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "status"], name="workflows_testrun_org_status")]

    def __str__(self) -> str:
        return f"test {self.pk} ({self.status})"
