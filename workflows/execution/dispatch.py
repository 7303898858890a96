"""Sending runs to the workers, and sending them again when a message was lost.

``dispatch_recorded`` sends a Celery chain of ``workflows.execute_step(run_id,
position)`` messages, by task name (messages hold ids only; outputs travel
through the database): one message per step that leaves the process; the steps
that only compute (``policy.runs_in_process``) run in the same task, before and
after it (``message_groups``, ``engine.run_step``). ``recover_stalled_runs`` is the sweeper beat runs every
``POTAFLOW_RECOVERY_INTERVAL_SECONDS``:

- a ``running`` step whose lease lapsed (its worker died) is sent again with
  ``force``: that message may take it over (see ``workflows.execution.engine``);
- an unfinished run with no running step and no progress for
  ``POTAFLOW_STALLED_AFTER_SECONDS`` (a lost message: broker restarted empty,
  a web process that died between commit and send, a retry whose delayed
  message vanished) is sent again -- unless the broker still holds its message
  (``workflows.execution.inflight``): a run queued behind a backlog is not lost.
  Where the broker can say so (Redis), a run whose message it does not hold at
  all -- neither queued nor held by a worker -- is sent after
  ``POTAFLOW_LOST_AFTER_SECONDS`` already: the window only covers a message on
  its way (sent after the commit that moved the run), and waiting longer delays
  every run a flushed broker lost; a message a worker holds is still given
  ``POTAFLOW_STALLED_AFTER_SECONDS`` (that worker is presumed dead only then);
- parked steps (``workflows.execution.fairness``) whose organization has a
  free slot are sent.

Take-overs and woken parked steps go to the recovery queue
(``POTAFLOW_RECOVERY_QUEUE``), which the workers serve in turn with the
default one: they do not wait behind the backlog. A lost message's re-send goes
to the default queue (after a broker flush there are hundreds of them, and a
take-over must not wait behind those either).

A message sent twice is harmless: claims make the second one a no-op.
"""

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from celery import chain, current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from ..flow import tree
from ..models import ACTIVE_RUN_STATUSES, UNFINISHED_RUN_STATUSES, Run, StepIteration, StepRun, StepRunStatus
from . import fairness, flow, recording
from .policy import chain_limits, lease_seconds, runs_in_process

logger = logging.getLogger(__name__)

EXECUTE_STEP_TASK = "workflows.execute_step"
SWEEP_BATCH = 500
# Instances that wait for time or an outside event (a run with one of them is not stalled).
WAITING_TYPES = (tree.DELAY, tree.WAIT)


def dispatch(run_id: Any, *, force: bool = False, queue: str | None = None, decide_again: bool = False) -> int:
    """Send the chain of the run's unfinished steps; returns how many steps were sent.

    ``force`` (recovery) lets the first message take over a step whose lease lapsed;
    ``queue`` sends the first message there (the recovery queue: not behind the backlog);
    ``decide_again`` (the sweeper's stalled runs) also decides again what follows a flow run's
    recorded steps when other instances are pending (``_dispatch_flow``).
    """
    try:
        run = Run.objects.select_related("version").get(pk=run_id)
    except (Run.DoesNotExist, ValidationError):
        logger.warning("dispatch: run %s does not exist; nothing sent", run_id)
        return 0
    if flow.is_flow_run(run):
        return _dispatch_flow(run, force=force, queue=queue, decide_again=decide_again)
    if run.is_finished:
        return 0
    todo = list(
        run.step_runs.filter(
            status__in=[StepRunStatus.PENDING, StepRunStatus.RUNNING, StepRunStatus.RETRYING]
        ).values_list("position", flat=True)
    )
    if not todo:
        recording.finish_if_complete(run)
        return 0
    return dispatch_recorded(run, sorted(todo), force=force, queue=queue)


def _dispatch_flow(run: Run, *, force: bool, queue: str | None = None, decide_again: bool = False) -> int:
    """Recovery of a flow run: each list in progress is sent again as one chain. What follows a
    recorded step whose task died before deciding it is decided again (``flow.recover_continuation``)
    when nothing is in progress and nothing waits -- and, for a stalled run (``decide_again``), also
    while other chains are pending: a parallel loop's iteration that was never counted must not wait
    for its siblings. Not for a take-over or a woken parked step (it would lock and read the whole
    run for each). The chains are read first: what the decision writes, it sends itself."""
    chains = flow.pending_chains(run)
    if (chains and decide_again) or (
        not chains and not run.step_runs.filter(status=StepRunStatus.WAITING, action_type__in=WAITING_TYPES).exists()
    ):
        flow.recover_continuation(run)
    return _send_chains(run, chains, force=force, queue=queue)


def _send_chains(run: Run, chains: list[list[int]], *, force: bool = False, queue: str | None = None) -> int:
    """Send each chain of a flow run's instances (positions, as ``flow.pending_chains`` groups them)."""
    if not chains:
        return 0
    by_key = flow.places(run)
    keys = dict(run.step_runs.filter(position__in=[p for c in chains for p in c]).values_list("position", "key"))
    sent = 0
    for positions in chains:
        specs = [flow.spec_of(run, keys[p]) or {} if keys.get(p) in by_key else {} for p in positions]
        sent += dispatch_recorded(run, positions, force=force, specs=specs, queue=queue)
    return sent


def dispatch_recorded(
    run: Run,
    positions: list[int],
    *,
    force: bool = False,
    specs: Sequence[Mapping[str, Any]] | None = None,
    queue: str | None = None,
) -> int:
    """Send the chain of ``positions`` of ``run``, a run whose state the caller knows.

    ``run_accept`` calls it right after commit with the steps it just wrote, so
    the webhook's hot path does not read them back; ``dispatch`` after reading them.
    A flow run's segment stops at its first control step (which decides what follows); ``specs``
    are the steps of ``positions`` when they are not top-level steps at their definition's positions.
    """
    if specs is None:
        by_position = {s["position"]: s for s in run.definition.get("steps", [])}
        specs = [by_position.get(position) or {} for position in positions]
        if flow.is_flow_run(run):
            cut = next((i for i, spec in enumerate(specs) if tree.is_control(spec)), len(specs) - 1)
            positions, specs = positions[: cut + 1], specs[: cut + 1]
    signatures = []
    for index, group in enumerate(message_groups(specs)):
        position = positions[group[0]]
        # One message per step that leaves the process, with the steps around it that run in process
        # (``policy.runs_in_process``, ``message_groups``): its time limits cover them all.
        soft, hard = chain_limits([specs[i] for i in group])
        kwargs = {"force": True} if force and index == 0 else {}
        options: dict[str, Any] = {"queue": queue} if queue and index == 0 else {}
        signatures.append(
            current_app.signature(
                EXECUTE_STEP_TASK,
                args=(str(run.pk), position),
                kwargs=kwargs,
                immutable=True,
                soft_time_limit=soft,
                time_limit=hard,
                **options,
            )
        )
    chain(*signatures).apply_async()
    logger.info(
        "dispatched run %s from step %s (%d step(s), %d message(s))",
        run.pk,
        positions[0],
        len(positions),
        len(signatures),
    )
    return len(positions)


# The segments a step's task offered to run itself (``run_step`` sets it while it runs a message).
_taken_here: ContextVar[list[tuple[Run, list[int], list[Mapping[str, Any]]]] | None] = ContextVar(
    "potaflow_taken_here", default=None
)


@contextmanager
def taking_segments() -> Iterator[list[tuple[Run, list[int], list[Mapping[str, Any]]]]]:
    """While a task runs its message: a segment whose every step runs in process, written by a
    decision of this task (a branch's path, a loop's iteration, what follows a container), is
    run by this task instead of being sent (``offer``). What it leaves untaken is sent on exit."""
    taken: list[tuple[Run, list[int], list[Mapping[str, Any]]]] = []
    token = _taken_here.set(taken)
    try:
        yield taken
    finally:
        _taken_here.reset(token)
        for run, positions, specs in taken:
            try:
                dispatch_recorded(run, positions, specs=specs)
            except Exception:  # noqa: BLE001 - recorded; the recovery sweeper sends pending steps again
                logger.exception(
                    "run %s: steps %s are recorded but could not be sent; the sweeper will", run.pk, positions
                )


def offer(run: Run, positions: list[int], specs: Sequence[Mapping[str, Any]]) -> bool:
    """Take a segment just written for the task running now (see ``taking_segments``); False: send it.

    One per task (more, e.g. a loop's parallel iterations, go to the broker and so to other workers),
    and only a segment of steps that all run in process: one that leaves the process needs the
    chain's messages in order, which this task's own message does not carry.
    """
    taken = _taken_here.get()
    if taken is None or taken or not positions or not all(runs_in_process(spec) for spec in specs):
        return False
    taken.append((run, list(positions), [dict(spec) for spec in specs]))
    return True


def message_groups(specs: Sequence[Mapping[str, Any] | None]) -> list[list[int]]:
    """The indexes of a chain's steps grouped by the message that runs them.

    A message runs at most one step that leaves the process (its claim token, its redelivery and
    its in-doubt handling are that step's), with the steps that only compute before and after it:
    the first step starts a message, and so does every step that leaves the process once the
    message has one. ``engine.run_step`` walks a message's steps by the same rule (``_follower``).
    """
    groups: list[list[int]] = []
    leaves: list[bool] = []  # per message: it has its step that leaves the process
    for index, spec in enumerate(specs):
        local = runs_in_process(spec)
        if groups and (local or not leaves[-1]):
            groups[-1].append(index)
            leaves[-1] = leaves[-1] or not local
        else:
            groups.append([index])
            leaves.append(not local)
    return groups


def recover_stalled_runs(*, stalled_after: float | None = None, lost_after: float | None = None) -> list[str]:
    """Send again what a lost worker or a lost message left behind; returns the run ids sent.

    A take-over goes to the recovery queue (not behind the backlog); a lost message to the default one.
    ``stalled_after`` / ``lost_after``: the settings' windows (see the module docstring).
    """
    if stalled_after is None:
        stalled_after = settings.POTAFLOW_STALLED_AFTER_SECONDS
    if lost_after is None:
        lost_after = settings.POTAFLOW_LOST_AFTER_SECONDS
    now = timezone.now()
    recovered: list[str] = []

    # Steps whose worker stopped renewing their lease. The step's takeover_sent_at keeps two sweeps
    # from sending it twice within a lease period (the run's own progress does not: in a parallel loop
    # the other iterations move it while this one waits to be taken over).
    lapsed = (
        StepRun.objects.filter(status=StepRunStatus.RUNNING)
        .filter(Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True))
        .filter(run__status__in=UNFINISHED_RUN_STATUSES)
        .filter(Q(takeover_sent_at__isnull=True) | Q(takeover_sent_at__lt=now - timedelta(seconds=lease_seconds())))
        .values_list("pk", "run_id", "takeover_sent_at")
    )
    for step_pk, run_id, seen in lapsed[:SWEEP_BATCH]:
        if (
            StepRun.objects.filter(pk=step_pk, takeover_sent_at=seen).update(takeover_sent_at=now)
            and str(run_id) not in recovered  # one message per run: it sends every lapsed step of it
        ):
            logger.warning("run %s: a running step's lease lapsed (worker lost); sending it again", run_id)
            dispatch(run_id, force=True, queue=settings.POTAFLOW_RECOVERY_QUEUE)
            recovered.append(str(run_id))

    # Parked steps whose organization has a free slot (a wake lost with its worker).
    fairness.wake_parked()

    # Runs with nothing running and no progress: their next message may be lost. Not a parked one
    # (it waits for its organization by design) nor one whose retry is not due yet (its countdown
    # message is held by a worker).
    since = now - timedelta(seconds=stalled_after)
    looks = _broker_can_say()
    looked_since = now - timedelta(seconds=min(lost_after, stalled_after))  # where the broker can say
    running = StepRun.objects.filter(run=OuterRef("pk"), status=StepRunStatus.RUNNING)
    parked = StepRun.objects.filter(run=OuterRef("pk"), parked_at__isnull=False)
    retry_ahead = StepRun.objects.filter(run=OuterRef("pk"), status=StepRunStatus.RETRYING, next_attempt_at__gt=since)
    stalled = list(
        Run.objects.filter(
            status__in=ACTIVE_RUN_STATUSES,
            last_progress_at__lt=looked_since if looks else since,
        )
        .filter(~Exists(running), ~Exists(parked), ~Exists(retry_ahead))
        .values_list("pk", "last_progress_at")[:SWEEP_BATCH]
    )
    flight = _in_flight() if stalled else None
    skipped = 0
    for run_id, seen in stalled:
        if flight is None and seen >= since:
            continue  # the broker could not say: by age alone
        if flight is not None and _still_in_broker(flight, str(run_id), since.timestamp()):
            skipped += 1
            continue
        if _claim_recovery(run_id, seen, now):
            logger.warning("recovering stalled run %s (no progress since %s)", run_id, seen.isoformat())
            # The default queue: after a broker flush these are hundreds, and a take-over must not
            # wait behind them in the recovery queue.
            dispatch(run_id, force=True, decide_again=True)
            recovered.append(str(run_id))
    if skipped:
        logger.info("sweeper: %d run(s) without progress still have their message in the broker (queued)", skipped)
    if looks:
        recovered += _recover_lost_iterations(looked_since, since, set(recovered))
    return recovered


def _recover_lost_iterations(lost_since: Any, stalled_since: Any, done: set[str]) -> list[str]:
    """A loop's iteration whose message is gone while its sibling iterations move the run along: the
    run's last_progress_at never ages, so the pass above does not see it, and the lost iteration
    would wait until every other item is done (holding one of the loop's ``parallel`` slots). Where
    the broker can say what it holds: an iteration running for ``lost_since`` whose first unfinished
    instance is neither running nor queued nor held recently is sent again (its chain alone).

    Read in this order: the instances, the broker, the instances again -- a message taken and done
    between the first two reads is seen done by the third; one published after the first read was
    published after its step's predecessor committed, before the broker is read."""
    loops = dict(
        StepRun.objects.filter(
            status=StepRunStatus.WAITING, action_type=tree.FOR_EACH, run__status__in=ACTIVE_RUN_STATUSES
        ).values_list("pk", "run_id")[:SWEEP_BATCH]
    )
    if not loops:
        return []
    stale = StepIteration.objects.filter(
        loop_id__in=list(loops), status=StepRunStatus.RUNNING, started_at__lt=lost_since
    )
    run_ids = {str(loops[loop_id]) for loop_id in stale.values_list("loop_id", flat=True)} - done
    if not run_ids:
        return []
    runs = list(Run.objects.select_related("version").filter(pk__in=run_ids, status__in=ACTIVE_RUN_STATUSES))
    candidates = [(run, flow.pending_chains_with_first(run)) for run in runs]
    flight = _in_flight()
    if flight is None:
        return []
    sent: list[str] = []
    for run, chains in candidates:
        lost = [chain for chain, first in chains if _chain_is_lost(flight, str(run.pk), first, stalled_since)]
        if not lost:
            continue
        still = set(
            StepRun.objects.filter(
                run_id=run.pk,
                position__in=[chain[0] for chain in lost],
                status__in=[StepRunStatus.PENDING, StepRunStatus.RETRYING],
            ).values_list("position", flat=True)
        )
        lost = [chain for chain in lost if chain[0] in still]
        if lost:
            logger.warning(
                "recovering stalled run %s: the message of step %s is gone while the run's other iterations go on",
                run.pk,
                ", ".join(str(chain[0]) for chain in lost),
            )
            _send_chains(run, lost)
            sent.append(str(run.pk))
    return sent


def _chain_is_lost(flight: Any, run_id: str, first: StepRun, stalled_since: Any) -> bool:
    """The chain whose first unfinished instance is ``first`` has no message anywhere (see above); as
    for a whole run, a retry's countdown message and a message a worker holds get the long window."""
    if first.status == StepRunStatus.RUNNING:
        return False  # its lease says whether its worker lives
    if first.status == StepRunStatus.RETRYING and first.next_attempt_at and first.next_attempt_at > stalled_since:
        return False  # its countdown message is held by a worker until then
    step = (run_id, first.position)
    if step in flight.queued_steps:
        return False
    held = flight.held_steps.get(step)
    return held is None or held <= stalled_since.timestamp()


def _broker_can_say() -> bool:
    """Whether ``workflows.execution.inflight`` can look into this broker (a cheap check of its URL)."""
    from . import inflight  # it names this module's task

    return inflight.can_look()


def _in_flight() -> Any:
    """What the broker holds (``workflows.execution.inflight``); None when it cannot say."""
    from . import inflight  # it names this module's task

    try:
        return inflight.in_flight()
    except Exception:  # noqa: BLE001 - unreadable broker: re-send by age, as without one
        logger.exception("sweeper: could not read the broker's queues; going by age alone")
        return None


def _still_in_broker(flight: Any, run_id: str, since: float) -> bool:
    """Queued, or held by a worker that took it recently (an old hold: its worker is gone)."""
    if run_id in flight.queued:
        return True
    held = flight.held.get(run_id)
    return held is not None and held > since


def _claim_recovery(run_id: Any, seen: Any, now: Any) -> bool:
    """Only one sweeper re-sends a run: the one that moves its last_progress_at."""
    return bool(Run.objects.filter(pk=run_id, last_progress_at=seen).update(last_progress_at=now))
