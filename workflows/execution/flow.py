"""Flow control at run time (issue 19): what runs after a step, decided from the definition's tree.

A definition is a tree of step lists (``workflows.flow.tree``). Instances are
``StepRun`` rows written when they are reached: intake writes the first
straight *segment* of the top-level list (up to and including its first
control step), and each later segment is written and sent as one Celery chain
by the task that decided it:

- a plain step that succeeded goes on with the chain when its next sibling is
  in it (same segment); after the last step of a nested list the engine looks
  up the container's continuation here (``after_success``);
- a control step (branch, for_each, delay, wait, stop) is executed by the
  engine itself (``decide``): it renders only its own expressions (a path's
  ``when``, a loop's ``items``...), never the nested lists, which are rendered
  when their instances run;
- a branch or loop instance is ``waiting`` while its nested steps run, and
  succeeds when the last of them ends (a loop with the list of its iterations'
  results). Iterations run ``parallel`` at a time (1 by default); the fan-in is
  a database update under the run's lock: the iteration that finishes last
  closes the loop and continues after it;
- delays and waits are durable: the instance is ``waiting`` with ``wake_at``
  in the database, woken by the beat-driven ``wake_due`` task (never a Celery
  countdown), a POST to the resume URL (``resume_webhook``) or an approval
  (``approve``).

Every write here holds the run's row lock (``_lock_run``), so two tasks
finishing at once decide one after the other, and creating an instance twice
is impossible (``unique_step_run_path``): a redelivered message that decides
again writes nothing and sends nothing. Instances are sent after commit; a send
lost to a broker outage leaves pending rows that the recovery sweeper sends.
Paths: a step's key, ``lines[3]/ratio`` inside the iteration 3 of loop
``lines`` (nested loops: ``a[1]/b[0]/c``); the idempotency key of an instance
is the run and its path.
"""

import hashlib
import hmac
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, Subquery
from django.urls import reverse
from django.utils import timezone

from integrations.control.action import Branch
from integrations.errors import PermanentError
from integrations.registry import get_action

from ..flow import tree
from ..models import Run, RunStatus, StepIteration, StepRun, StepRunStatus
from . import recording
from .recording import Attempt, cap_output

logger = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS = 1000
WAKE_BATCH = 200
_LOOP_SCOPE = re.compile(r"^(?P<loop>.*)\[(?P<index>\d+)\]/$")


class FlowError(Exception):
    """A resume or approval that cannot apply; ``code`` is the HTTP answer the API gives."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# -- the definition, read once per version --------------------------------------
_places: dict[Any, dict[str, tree.Place]] = {}
_flows: dict[Any, bool] = {}


def _cache_key(run: Run) -> Any:
    return (run.version_id, id(run.definition))


def is_flow_run(run: Run) -> bool:
    """Does this run execute with the flow engine (see ``tree.is_flow``)?"""
    key = _cache_key(run)
    if key not in _flows:
        if len(_flows) > 512:
            _flows.clear()
        _flows[key] = tree.is_flow(run.definition)
    return _flows[key]


def places(run: Run) -> dict[str, tree.Place]:
    key = _cache_key(run)
    if key not in _places:
        if len(_places) > 512:
            _places.clear()
        _places[key] = tree.places(run.definition)
    return _places[key]


_orders: dict[Any, dict[str, int]] = {}
_SCOPE_PART = re.compile(r"^(?P<key>[^\[\]/]+)\[(?P<index>\d+)\]$")
# Never reused by a replay: decided again (no outside call) so the replay walks its own tree.
NOT_REUSED = tree.CONTAINER_TYPES | {tree.STOP}


def _order(run: Run) -> dict[str, int]:
    key = _cache_key(run)
    if key not in _orders:
        if len(_orders) > 512:
            _orders.clear()
        _orders[key] = definition_order(run.definition)
    return _orders[key]


def definition_order(definition: Mapping[str, Any]) -> dict[str, int]:
    """Each step key's rank in the definition, depth first (a step comes before what it holds)."""
    return {located.key: i for i, located in enumerate(tree.walk_definition(definition))}


def order_key(order: Mapping[str, int], path: str) -> tuple[tuple[int, ...], ...] | None:
    """Where instance ``path`` comes in a run of the definition ranked by ``order``: instances compare
    in run order (a step before the steps after it and those it holds, iteration 0 before 1 and
    iteration 1 before what follows the loop). None when a key of the path is not in the definition."""
    parts = path.split("/")
    out: list[tuple[int, ...]] = []
    for part in parts[:-1]:
        match = _SCOPE_PART.match(part)
        if match is None or match["key"] not in order:
            return None
        out.append((order[match["key"]], int(match["index"])))
    if parts[-1] not in order:
        return None
    out.append((order[parts[-1]],))
    return tuple(out)


def spec_of(run: Run, key: str) -> dict[str, Any] | None:
    place = places(run).get(key)
    return dict(place.steps[place.index]) if place is not None else None


def path_of(step_run: StepRun) -> str:
    return step_run.path or step_run.key


def scope_of(step_run: StepRun) -> str:
    """The iteration prefix of an instance's path: "" or "lines[3]/" (``tree.scope_of_path``)."""
    return tree.scope_of_path(path_of(step_run), step_run.key)


def idempotency_key(run_id: Any, path: str) -> str:
    """Run and path: distinct per iteration, the same for every attempt of one instance."""
    return f"potaflow-{run_id}-{path}"


# -- template context --------------------------------------------------------------
def resume_token(run_id: Any, path: str) -> str:
    """The capability in a wait's resume URL: unguessable, and known before the wait starts
    (an earlier step may put the URL in a message)."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"resume:{run_id}:{path}".encode(), hashlib.sha256)
    return digest.hexdigest()[:48]


def resume_url(run_id: Any, path: str) -> str:
    return settings.POTAFLOW_BASE_URL.rstrip("/") + reverse("workflows:run-resume", args=[resume_token(run_id, path)])


class ScopedOutputs(Mapping[str, Any]):
    """``steps.<key>`` as an instance sees them: outside loops the run's instances, inside an
    iteration that iteration's instances (and those of the iterations around it)."""

    def __init__(self, run: Run, scope: str) -> None:
        self._run = run
        self._scope = scope
        self._loaded: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        if self._loaded is None:
            data: dict[str, Any] = {}
            rows = (
                StepRun.objects.filter(run_id=self._run.pk, status__in=[StepRunStatus.SUCCEEDED, StepRunStatus.FAILED])
                .order_by("position")
                .values_list("key", "path", "status", "output")
            )
            for key, path, status, output in rows:
                full = path or key
                if self._scope.startswith(full[: len(full) - len(key)]):
                    data[key] = {"output": output if status == StepRunStatus.SUCCEEDED else None, "status": status}
            self._loaded = data
        return self._loaded

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())


def extend_context(context: dict[str, Any], run: Run, step_run: StepRun, *, eager: bool) -> None:
    """Scope ``steps``, add ``item``/``index`` inside a loop, ``failure`` in the error path, and
    ``run.resume_url(key)`` (the resume URL of wait step ``key`` in this scope)."""
    scope = scope_of(step_run)
    steps: Mapping[str, Any] = ScopedOutputs(run, scope)
    context["steps"] = dict(steps) if eager else steps
    run_id = run.pk

    def _resume_url(key: str) -> str:
        return resume_url(run_id, f"{scope}{key}")

    context["run"] = {**context["run"], "resume_url": _resume_url}
    match = _LOOP_SCOPE.match(scope)
    if match:
        index = int(match["index"])
        context["item"], context["index"] = _item(run, match["loop"], index), index
    if step_run.error_path:
        failed = (
            StepRun.objects.filter(run_id=run.pk, status=StepRunStatus.FAILED, error_path=False)
            .order_by("-finished_at", "-position")
            .first()
        )
        error = Run.objects.filter(pk=run.pk).values_list("error", flat=True).first() or ""
        context["failure"] = {
            "step": failed.key if failed else "",
            "error": failed.error if failed else error,
            "attempts": failed.attempts if failed else 0,
            "run_error": error,
        }


# -- decisions of control steps --------------------------------------------------------
# By the loop's id, not a join: the unique (loop, index) index answers it whatever the planner
# believes of the tables' sizes (a join read every iteration of that index). Plain SQL: every
# iteration's message reads it, and the ORM's machinery cost four times the statement.
_ITEM_SQL = (
    'SELECT item FROM workflows_stepiteration WHERE "index" = %s'
    " AND loop_id = (SELECT id FROM workflows_steprun WHERE run_id = %s AND path = %s)"
)


def _item(run: Run, loop_path: str, index: int) -> Any:
    """Item ``index`` of the loop instance at ``loop_path`` (None if the iteration is gone)."""
    with connection.cursor() as cursor:
        cursor.execute(_ITEM_SQL, [index, Run._meta.pk.get_db_prep_value(run.pk, connection), loop_path])
        found = cursor.fetchone()
    if found is None or found[0] is None:
        return None
    return recording.json_from_db(StepIteration, "item", found[0])


def decide(attempt: Attempt, spec: Mapping[str, Any], rendered: dict[str, Any], context: dict[str, Any]) -> None:
    """Execute control step ``spec`` (its own expressions rendered into ``rendered``) and record what
    it decided, sending what follows. Raises ``PermanentError`` for a config that cannot run."""
    kind = spec.get("action_type")
    if kind == tree.BRANCH:
        _decide_branch(attempt, spec, rendered)
    elif kind == tree.FOR_EACH:
        _decide_loop(attempt, spec, rendered)
    elif kind == tree.DELAY:
        _decide_delay(attempt, rendered)
    elif kind == tree.WAIT:
        _decide_wait(attempt, rendered)
    elif kind == tree.STOP:
        _decide_stop(attempt, rendered)
    else:
        raise PermanentError(f"{kind!r} is not a control step")


def _decide_branch(attempt: Attempt, spec: Mapping[str, Any], rendered: Mapping[str, Any]) -> None:
    """The paths taken: the branch action's own rule (``Branch.choose``, as the dry run uses it) on the
    rendered conditions; no path and no otherwise: nothing taken, the run goes on after the branch."""
    config = spec.get("config") or {}
    mode = config.get("mode") or "first"
    if mode not in ("first", "all"):
        raise PermanentError(f"mode must be 'first' or 'all', not {mode!r}")
    action = get_action(tree.BRANCH)
    if not isinstance(action, Branch):
        raise PermanentError("the branch action is not PotaFlow's (a plugin replaced it)")
    taken = action.choose(rendered)
    if taken == [tree.OTHERWISE] and not isinstance(config.get(tree.OTHERWISE), list):
        taken = []
    output = {"taken": taken}
    by_name = {slot.name: slot for slot in tree.slots(spec)}
    first = next((name for name in taken if by_name.get(name) and by_name[name].steps), None)
    with transaction.atomic():
        if first is None:
            if recording.record_decision(attempt, StepRunStatus.SUCCEEDED, output):
                run = _lock_run(attempt.run.pk, attempt.run)
                _continue_after(run, _row(attempt.step_run.pk))
            return
        if not recording.record_decision(attempt, StepRunStatus.WAITING, output):
            return
        run = _lock_run(attempt.run.pk, attempt.run)
        row = _row(attempt.step_run.pk)
        _start_list(run, by_name[first].steps, 0, scope_of(row), row)
    logger.info("run %s branch %s took %s", attempt.run.pk, attempt.step_run.key, taken)


def max_items_limit(config: Mapping[str, Any]) -> tuple[int, str]:
    """The loop's bound and what sets it: ``max_items`` (default 1,000) up to the operator's ceiling."""
    ceiling = int(settings.POTAFLOW_FOR_EACH_MAX_ITEMS)
    wanted = config.get("max_items")
    if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > 0:
        if wanted > ceiling:
            return ceiling, f"the ceiling POTAFLOW_FOR_EACH_MAX_ITEMS={ceiling}"
        return wanted, f"max_items={wanted}"
    limit = min(DEFAULT_MAX_ITEMS, ceiling)
    return limit, f"max_items (default {limit}; the ceiling is POTAFLOW_FOR_EACH_MAX_ITEMS={ceiling})"


def _decide_loop(attempt: Attempt, spec: Mapping[str, Any], rendered: Mapping[str, Any]) -> None:
    items = rendered.get("items")
    if not isinstance(items, list):
        raise PermanentError(f"items must give a list, not {type(items).__name__}: check config.items")
    limit, what = max_items_limit(spec.get("config") or {})
    if len(items) > limit:
        raise PermanentError(f"{len(items)} items is over the limit of {limit} items ({what})")
    parallel = rendered.get("parallel") or 1
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise PermanentError(f"parallel must be a whole number of at least 1, not {parallel!r}")
    total = len(items)
    with transaction.atomic():
        if total == 0:
            if recording.record_decision(attempt, StepRunStatus.SUCCEEDED, [], loop_total=0, loop_finished=0):
                run = _lock_run(attempt.run.pk, attempt.run)
                _continue_after(run, _row(attempt.step_run.pk))
            return
        first = min(parallel, total)  # started now: counted in loop_started, their rows running
        if not recording.record_decision(
            attempt, StepRunStatus.WAITING, None, loop_total=total, loop_started=first, loop_finished=0
        ):
            return
        run = _lock_run(attempt.run.pk, attempt.run)
        loop = _row(attempt.step_run.pk)
        now = timezone.now()
        StepIteration.objects.filter(loop=loop).delete()  # none unless a lost attempt wrote them
        StepIteration.objects.bulk_create(
            StepIteration(
                loop=loop,
                index=i,
                item=cap_output(item),
                status=StepRunStatus.RUNNING if i < first else StepRunStatus.PENDING,
                started_at=now if i < first else None,
            )
            for i, item in enumerate(items)
        )
        for index in range(first):
            _start_iteration(run, loop, index)
    logger.info("run %s loop %s: %d items, %d at a time", attempt.run.pk, attempt.step_run.key, total, parallel)


def _decide_delay(attempt: Attempt, rendered: Mapping[str, Any]) -> None:
    now = timezone.now()
    seconds, until = rendered.get("seconds"), rendered.get("until")
    if until not in (None, ""):
        wake = _parse_until(until, rendered.get("timezone"))
    elif isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
        wake = now + timedelta(seconds=float(seconds))
    else:
        raise PermanentError(f"a delay needs seconds (a number of at least 0) or until, not seconds={seconds!r}")
    _pause(attempt, {"until": wake.isoformat()}, wake_at=max(wake, now))


def _parse_until(value: Any, zone: Any) -> datetime:
    """``until``: an ISO time; without an offset it is read in ``timezone`` (the config's), else UTC."""
    try:
        when = datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise PermanentError(f"until must be an ISO 8601 time (2030-01-31T09:00:00+01:00), not {value!r}") from None
    if when.tzinfo is None:
        try:
            tz = ZoneInfo(str(zone)) if zone else UTC
        except (ZoneInfoNotFoundError, ValueError):
            raise PermanentError(f"timezone {zone!r} is not an IANA time zone (Europe/Paris)") from None
        when = when.replace(tzinfo=tz)
    return when.astimezone(UTC)


def _decide_wait(attempt: Attempt, rendered: Mapping[str, Any]) -> None:
    kind = rendered.get("kind") or "webhook"
    if kind not in ("webhook", "approval"):
        raise PermanentError(f"kind must be 'webhook' or 'approval', not {kind!r}")
    on_timeout = rendered.get("on_timeout") or "fail"
    if on_timeout not in ("fail", "continue"):
        raise PermanentError(f"on_timeout must be 'fail' or 'continue', not {on_timeout!r}")
    timeout = rendered.get("timeout_seconds")
    wake = None
    if timeout not in (None, ""):
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise PermanentError(f"timeout_seconds must be a number above 0, not {timeout!r}")
        wake = timezone.now() + timedelta(seconds=float(timeout))
    path = path_of(attempt.step_run)
    token = resume_token(attempt.run.pk, path) if kind == "webhook" else ""
    _pause(attempt, None, wake_at=wake, resume_token=token)


def _pause(attempt: Attempt, output: Any, **fields: Any) -> None:
    with transaction.atomic():
        if not recording.record_decision(attempt, StepRunStatus.WAITING, output, **fields):
            return
        run = _lock_run(attempt.run.pk, attempt.run)
        Run.objects.filter(pk=run.pk, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).update(
            status=RunStatus.WAITING, last_progress_at=timezone.now()
        )
    logger.info("run %s waits at %s", attempt.run.pk, path_of(attempt.step_run))


def _decide_stop(attempt: Attempt, rendered: Mapping[str, Any]) -> None:
    status = rendered.get("status") or "succeeded"
    if status not in ("succeeded", "filtered", "failed"):
        raise PermanentError(f"status must be 'succeeded', 'filtered' or 'failed', not {status!r}")
    message = str(rendered.get("message") or "")
    now = timezone.now()
    with transaction.atomic():
        if not recording.record_decision(attempt, StepRunStatus.SUCCEEDED, {"status": status, "message": message}):
            return
        run = _lock_run(attempt.run.pk, attempt.run)
        row = _row(attempt.step_run.pk)
        if status == "failed":
            recording.fail_run(run, row, message or "stopped by a stop step", now, dead_letter=False)
            return
        _end_run(run, RunStatus(status), now, error=message if status == "filtered" else "", at=row)


# -- what follows a step -------------------------------------------------------------
def _lock_run(run_id: Any, loaded: Run | None = None) -> Run:
    """Lock the run's row: the decisions of one run take turns.

    With ``loaded`` (the run as its claim read it, its definition included) only the fields of the
    row that change are read again, in one short statement, onto it: the ORM's read of the run
    with its version and workflow cost ~1.6 ms of CPU, and every iteration's end takes the lock.
    """
    if loaded is None or not Run.version.is_cached(loaded):
        return Run.objects.select_for_update(of=("self",)).select_related("version", "workflow").get(pk=run_id)
    sql = _LOCK_SQL + (" FOR UPDATE" if connection.features.has_select_for_update else "")
    with connection.cursor() as cursor:
        cursor.execute(sql, [Run._meta.pk.get_db_prep_value(loaded.pk, connection)])
        row = cursor.fetchone()
    if row is None:
        raise Run.DoesNotExist(f"run {loaded.pk} is gone")
    loaded.status, loaded.replay_of_id, loaded.replay_from = row
    return loaded


_LOCK_SQL = "SELECT status, replay_of_id, replay_from FROM workflows_run WHERE id = %s"


def _row(pk: int) -> StepRun:
    """The instance as it is now, with its parent read in the same statement (``_parent`` uses it)."""
    rows = {
        row.pk: row
        for row in StepRun.objects.raw(
            "SELECT * FROM workflows_steprun WHERE id = %s"
            " OR id = (SELECT parent_id FROM workflows_steprun WHERE id = %s)",
            [pk, pk],
        )
    }
    if pk not in rows:
        raise StepRun.DoesNotExist(f"step run {pk} is gone")
    row = rows[pk]
    if row.parent_id in rows:
        StepRun.parent.field.set_cached_value(row, rows[row.parent_id])
    return row


def after_success(run: Run, step_run: StepRun) -> bool:
    """A plain step succeeded: True when the chain carries what follows (its next sibling is in the
    same segment); otherwise what follows is written and sent here, and the chain stops."""
    place = places(run).get(step_run.key)
    if place is None:
        return False
    if place.index + 1 < len(place.steps):
        following = f"{scope_of(step_run)}{place.steps[place.index + 1].get('key')}"
        if StepRun.objects.filter(run_id=run.pk, path=following).exists():
            return True
    with transaction.atomic():
        locked = _lock_run(run.pk, run)
        row = _row(step_run.pk)
        if locked.is_finished and not row.error_path:
            return False
        _continue_after(locked, row)
    return False


def _continue_after(run: Run, row: StepRun) -> None:
    """Write and send what follows ``row`` (finished): its next sibling's segment, or the end of its list."""
    place = places(run).get(row.key)
    if place is None:
        return
    if place.index + 1 < len(place.steps):
        _start_list(run, place.steps, place.index + 1, scope_of(row), _parent(row), error_path=row.error_path)
        return
    _list_ended(run, row, place)


def _parent(row: StepRun) -> StepRun | None:
    if not row.parent_id:
        return None
    if StepRun.parent.is_cached(row):  # read with the row (``_row``), under the same lock
        return row.parent
    return StepRun.objects.get(pk=row.parent_id)


def _start_list(
    run: Run,
    steps: Sequence[Mapping[str, Any]],
    start: int,
    scope: str,
    parent: StepRun | None,
    *,
    error_path: bool | None = None,
) -> list[int]:
    """Write the segment of ``steps`` from ``start`` and send it after commit (nothing if written before)."""
    specs = tree.segment(steps, start)
    if not specs:
        return []
    paths = [f"{scope}{spec.get('key')}" for spec in specs]
    # One read: the instances of these paths written before, and the run's last position.
    last = StepRun.objects.filter(run_id=run.pk).order_by("-position").values("position")[:1]
    found = list(
        StepRun.objects.filter(Q(path__in=paths) | Q(position=Subquery(last)), run_id=run.pk).values_list(
            "path", "position"
        )
    )
    existing = {path: position for path, position in found if path in paths}
    if paths[0] in existing:
        # Written before (a redelivered message deciding again, or a failed step whose run goes on
        # while the rest of its segment waits): send what is still pending; claims drop duplicates.
        pending = list(
            StepRun.objects.filter(run_id=run.pk, path__in=paths, status=StepRunStatus.PENDING)
            .order_by("position")
            .values_list("position", "key")
        )
        if pending:
            by_key = {str(spec.get("key")): spec for spec in specs}
            todo, todo_specs = [p for p, _ in pending], [by_key.get(k, {}) for _, k in pending]
            transaction.on_commit(lambda: _send(run, todo, todo_specs))
        return []
    first = max((position for _, position in found), default=0) + 1
    in_error_path = error_path if error_path is not None else bool(parent and parent.error_path)
    reuse = {} if in_error_path else _reusable(run, specs, paths)
    rows = [
        _reused_row(run, reuse[path], first + i, parent)
        if path in reuse
        else StepRun(
            run_id=run.pk,
            position=first + i,
            key=str(spec.get("key")),
            action_type=str(spec.get("action_type")),
            path=path,
            parent=parent,
            error_path=in_error_path,
        )
        for i, (spec, path) in enumerate(zip(specs, paths, strict=True))
    ]
    StepRun.objects.bulk_create(rows)
    fresh = [(row.position, spec) for row, spec in zip(rows, specs, strict=True) if not row.reused]
    if not fresh:  # a replay reused the whole segment: what follows it is decided now
        _continue_after(run, rows[-1])
        return []
    positions, fresh_specs = [p for p, _ in fresh], [spec for _, spec in fresh]
    transaction.on_commit(lambda: _send(run, positions, fresh_specs))
    return positions


def _reusable(run: Run, specs: Sequence[Mapping[str, Any]], paths: list[str]) -> dict[str, StepRun]:
    """A replay's instances written now that reuse the replayed run's output (by path, so by key
    in the current version too): the leading ones of the segment that succeeded there, of the same
    action, and come before both the replay's start (``Run.replay_from``) and every instance the
    replay executes again (what follows a step run again is run again, as in a straight replay)."""
    start = getattr(run, "replay_from", "")
    if not start or not run.replay_of_id:
        return {}
    order = _order(run)
    limit = order_key(order, start)
    if limit is None:
        return {}
    executed = (
        StepRun.objects.filter(run_id=run.pk, reused=False, error_path=False)
        .exclude(action_type__in=NOT_REUSED)
        .values_list("path", flat=True)
    )
    for path in executed:
        at = order_key(order, path)
        if at is not None and at < limit:
            limit = at
    wanted: list[tuple[str, str]] = []
    for spec, path in zip(specs, paths, strict=True):
        at = order_key(order, path)
        if spec.get("action_type") in NOT_REUSED or at is None or not at < limit:
            break
        wanted.append((path, str(spec.get("action_type"))))
    if not wanted:
        return {}
    old = {
        row.path: row
        for row in StepRun.objects.filter(
            run_id=run.replay_of_id, path__in=[p for p, _ in wanted], status=StepRunStatus.SUCCEEDED, error_path=False
        )
    }
    out: dict[str, StepRun] = {}
    for path, action_type in wanted:
        prior = old.get(path)
        if prior is None or prior.action_type != action_type:
            break  # never ran there (or another action now): it runs, and so does what follows
        out[path] = prior
    return out


def _reused_row(run: Run, prior: StepRun, position: int, parent: StepRun | None) -> StepRun:
    return StepRun(
        run_id=run.pk,
        position=position,
        key=prior.key,
        action_type=prior.action_type,
        path=prior.path,
        parent=parent,
        status=StepRunStatus.SUCCEEDED,
        rendered_config=prior.rendered_config,
        output=prior.output,
        started_at=prior.started_at,
        finished_at=prior.finished_at,
        duration_ms=prior.duration_ms,
        reused=True,
    )


def start(run: Run) -> None:
    """Write and send the first segment of a run created here (a replay: ``Run.replay_from``)."""
    _start_list(run, run.definition.get("steps") or [], 0, "", None)


def _send(run: Run, positions: list[int], specs: Sequence[Mapping[str, Any]]) -> None:
    from .dispatch import dispatch_recorded, offer  # dispatch imports this module (recovery of flow runs)

    if offer(run, positions, specs):  # steps that only compute: run by the task that decided them
        return
    try:
        dispatch_recorded(run, positions, specs=specs)
    except Exception:  # noqa: BLE001 - recorded; the recovery sweeper sends pending instances again
        logger.exception("run %s: steps %s are recorded but could not be sent; the sweeper will", run.pk, positions)


def _list_ended(run: Run, last: StepRun, place: tree.Place) -> None:
    parent = _parent(last)
    if parent is None:
        if not last.error_path:
            _end_run(run, RunStatus.SUCCEEDED, timezone.now())
        return
    if parent.action_type == tree.BRANCH:
        spec = spec_of(run, parent.key) or {}
        taken = list((parent.output or {}).get("taken") or [])
        by_name = {slot.name: slot for slot in tree.slots(spec)}
        later = taken[taken.index(place.slot) + 1 :] if place.slot in taken else []
        for name in later:  # every-match mode: the next path taken, one after the other
            slot = by_name.get(name)
            if slot is not None and slot.steps:
                _start_list(run, slot.steps, 0, scope_of(parent), parent)
                return
        _close_container(run, parent, parent.output)
    elif parent.action_type == tree.FOR_EACH:
        match = _LOOP_SCOPE.match(scope_of(last))
        if match is not None:
            _iteration_done(run, parent, int(match["index"]), StepRunStatus.SUCCEEDED, last.output)


def _close_container(run: Run, row: StepRun, output: Any) -> None:
    now = timezone.now()
    if StepRun.objects.filter(pk=row.pk, status=StepRunStatus.WAITING).update(
        status=StepRunStatus.SUCCEEDED, output=output, finished_at=now
    ):
        row.status, row.output = StepRunStatus.SUCCEEDED, output
        Run.objects.filter(pk=run.pk).update(last_progress_at=now)
        _continue_after(run, row)


def _start_iteration(run: Run, loop: StepRun, index: int) -> None:
    """Write and send iteration ``index``'s body (its iteration row is ``running`` and counted in
    ``loop_started`` already); an empty body ends the iteration at once."""
    spec = spec_of(run, loop.key) or {}
    body = next((slot.steps for slot in tree.slots(spec)), [])
    if not body:
        _iteration_done(run, loop, index, StepRunStatus.SUCCEEDED, None)
        return
    _start_list(run, body, 0, tree.iteration_scope(path_of(loop), index), loop)


# The fan-in of an iteration in one statement (PostgreSQL; the run's row is locked by the caller):
# the iteration is counted once (only from ``running``), the loop counts it, and while the loop is
# waiting with items not started the next one is taken (``loop_started`` + 1, its row ``running``).
# Returns nothing when the iteration was counted before. Five statements and a read before.
_FAN_IN_SQL = """
WITH done AS (
    UPDATE workflows_stepiteration
    SET status = %(status)s, output = %(output)s::jsonb, error = %(error)s, finished_at = %(now)s
    WHERE loop_id = %(loop)s AND index = %(index)s AND status = 'running'
    RETURNING id
), before AS (
    SELECT id, loop_started, (status = 'waiting' AND loop_started < loop_total) AS takes_next
    FROM workflows_steprun WHERE id = %(loop)s AND EXISTS (SELECT 1 FROM done)
    FOR UPDATE
), counted AS (
    UPDATE workflows_steprun AS l
    SET loop_finished = l.loop_finished + 1,
        loop_started = l.loop_started + CASE WHEN b.takes_next THEN 1 ELSE 0 END
    FROM before AS b
    WHERE l.id = b.id
    RETURNING l.status, l.loop_total, l.loop_finished, CASE WHEN b.takes_next THEN b.loop_started END AS next_index
), started AS (
    UPDATE workflows_stepiteration SET status = 'running', started_at = %(now)s
    WHERE loop_id = %(loop)s AND index = (SELECT next_index FROM counted) AND status = 'pending'
    RETURNING index
)
SELECT status, loop_total, loop_finished, next_index FROM counted
"""


def _iteration_done(run: Run, loop: StepRun, index: int, status: str, output: Any, error: str = "") -> None:
    """Fan-in: count the iteration once, start the next item, or close the loop after the last one."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        params = {
            "status": status,
            "output": recording.json_or_null(output),
            "error": error,
            "now": now,
            "loop": loop.pk,
            "index": index,
        }
        with connection.cursor() as cursor:
            cursor.execute(_FAN_IN_SQL, params)
            row = cursor.fetchone()
        if row is None:
            return  # counted before
        loop_status, total, finished, next_index = row
    else:
        if not StepIteration.objects.filter(loop=loop, index=index, status=StepRunStatus.RUNNING).update(
            status=status, output=output, error=error, finished_at=now
        ):
            return  # counted before
        StepRun.objects.filter(pk=loop.pk).update(loop_finished=F("loop_finished") + 1)
        loop.refresh_from_db(fields=["status", "loop_total", "loop_started", "loop_finished"])
        loop_status, total, finished, next_index = loop.status, loop.loop_total or 0, loop.loop_finished or 0, None
        if loop_status == StepRunStatus.WAITING and (loop.loop_started or 0) < total:
            next_index = loop.loop_started or 0
            _mark_started(loop, next_index, now)
    if loop_status != StepRunStatus.WAITING:
        return
    if next_index is not None:
        _start_iteration(run, loop, next_index)
    elif finished >= (total or 0):
        outputs = list(StepIteration.objects.filter(loop=loop).order_by("index").values_list("output", flat=True))
        _close_container(run, loop, cap_output(outputs))


def _mark_started(loop: StepRun, index: int, now: datetime) -> None:
    """Iteration ``index`` starts (the ORM's fan-in, SQLite): counted in ``loop_started``, its row ``running``."""
    StepRun.objects.filter(pk=loop.pk).update(loop_started=index + 1)
    StepIteration.objects.filter(loop=loop, index=index, status=StepRunStatus.PENDING).update(
        status=StepRunStatus.RUNNING, started_at=now
    )


def _end_run(run: Run, status: RunStatus, now: datetime, *, error: str = "", at: StepRun | None = None) -> None:
    """The run ends here (its last list ended, a stop step or a filter ``at``): the branch and loop
    instances holding ``at`` end with the run's status, what has not run is skipped."""
    if not Run.objects.filter(pk=run.pk, status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING]).update(
        status=status, finished_at=now, last_progress_at=now, error=error
    ):
        return
    if at is not None:
        _close_holders(at, status, now)
    StepRun.objects.filter(
        run_id=run.pk, status__in=[StepRunStatus.PENDING, StepRunStatus.RETRYING, StepRunStatus.WAITING]
    ).update(status=StepRunStatus.SKIPPED)
    _skip_open_iterations(run)
    logger.info("run %s %s", run.pk, status)


def _close_holders(row: StepRun, status: str, now: datetime, *, upto: StepRun | None = None) -> None:
    """Close the waiting branch/loop instances that hold ``row`` (up to, not including, ``upto``)."""
    holders: list[int] = []
    parent = _parent(row)
    while parent is not None and (upto is None or parent.pk != upto.pk):
        holders.append(parent.pk)
        parent = _parent(parent)
    StepRun.objects.filter(pk__in=holders, status=StepRunStatus.WAITING).update(status=status, finished_at=now)


def _skip_open_iterations(run: Run) -> None:
    """The run ended with iterations not started or under way: they will not run (or count) now."""
    # The loops' ids first, not a join: an UPDATE through a join is "id IN (join)", which stale
    # statistics planned as a nested loop over every iteration twice (15 s at 5,000 iterations).
    loops = StepRun.objects.filter(run_id=run.pk, action_type=tree.FOR_EACH).values("pk")
    StepIteration.objects.filter(loop_id__in=loops, status__in=[StepRunStatus.PENDING, StepRunStatus.RUNNING]).update(
        status=StepRunStatus.SKIPPED
    )


def on_filtered(run: Run, step_run: StepRun, now: datetime) -> None:
    """A filter's condition was false (its row is ``filtered``; in the caller's transaction).

    Inside a loop's iteration it ends that iteration only: the item is filtered out (as n8n's Filter
    and Zapier's looping drop an item), its result in the loop's output is ``None``, its iteration is
    ``filtered`` and the loop goes on. Elsewhere (top level, a branch path) it ends the run as
    ``filtered``. Either way the branch instances between the filter and that loop (or the top) are
    closed as ``filtered`` and what had not run there is skipped. In the error path it ends the error
    path; the run stays failed.
    """
    locked = _lock_run(run.pk)
    row = _row(step_run.pk)
    open_rows = [StepRunStatus.PENDING, StepRunStatus.RETRYING, StepRunStatus.WAITING]
    if row.error_path:
        StepRun.objects.filter(run_id=run.pk, error_path=True, status__in=open_rows).update(
            status=StepRunStatus.SKIPPED
        )
        return
    if locked.is_finished:
        return
    loop = _parent(row)
    while loop is not None and loop.action_type != tree.FOR_EACH:
        loop = _parent(loop)
    match = _LOOP_SCOPE.match(scope_of(row)) if loop is not None else None
    if loop is None or match is None:
        _end_run(locked, RunStatus.FILTERED, now, at=row)
        logger.info("run %s filtered at %s", run.pk, path_of(row))
        return
    _close_holders(row, StepRunStatus.FILTERED, now, upto=loop)
    StepRun.objects.filter(
        run_id=run.pk, path__startswith=scope_of(row), status__in=[StepRunStatus.PENDING, StepRunStatus.RETRYING]
    ).update(status=StepRunStatus.SKIPPED)
    _iteration_done(locked, loop, int(match["index"]), StepRunStatus.FILTERED, None)
    logger.info("run %s: item %s of %s filtered at %s", run.pk, match["index"], loop.key, path_of(row))


# -- failures --------------------------------------------------------------------------
def absorb_failure(run: Run, step_run: StepRun, message: str) -> bool:
    """A step failed for good (its row is written): True when the run goes on regardless
    (``continue_on_error``, a loop with ``on_item_failure: continue``, or a step of the error path,
    whose failure starts nothing else); False when the run fails."""
    locked = _lock_run(run.pk)
    row = _row(step_run.pk)
    if row.error_path:
        return True  # the run stays failed; a failing error path starts no other one
    if locked.is_finished:
        return True  # another instance failed the run first
    spec = spec_of(locked, row.key) or {}
    if spec.get("continue_on_error"):
        _continue_after(locked, row)
        return True
    child, parent = row, _parent(row)
    while parent is not None and parent.action_type != tree.FOR_EACH:
        child, parent = parent, _parent(parent)
    if parent is None:
        return False
    loop_spec = spec_of(locked, parent.key) or {}
    if (loop_spec.get("config") or {}).get("on_item_failure") != "continue":
        return False
    match = _LOOP_SCOPE.match(scope_of(child))
    if match is None:
        return False
    scope = scope_of(child)
    StepRun.objects.filter(run_id=run.pk, path__startswith=scope, status=StepRunStatus.PENDING).update(
        status=StepRunStatus.SKIPPED
    )
    StepRun.objects.filter(run_id=run.pk, path__startswith=scope, status=StepRunStatus.WAITING).update(
        status=StepRunStatus.FAILED
    )
    _iteration_done(locked, parent, int(match["index"]), StepRunStatus.FAILED, None, error=message)
    return True


def on_run_failed(run: Run, failed: StepRun | None = None) -> None:
    """The run failed (at ``failed``): close what was under way (the iterations holding ``failed``
    fail, the others will not run) and start the workflow's error path (once)."""
    if failed is not None:
        _fail_holding_iterations(run, failed)
    StepRun.objects.filter(
        run_id=run.pk, status=StepRunStatus.WAITING, action_type__in=[tree.BRANCH, tree.FOR_EACH]
    ).update(status=StepRunStatus.FAILED)
    StepRun.objects.filter(
        run_id=run.pk, status__in=[StepRunStatus.PENDING, StepRunStatus.RETRYING, StepRunStatus.WAITING]
    ).update(status=StepRunStatus.SKIPPED)
    _skip_open_iterations(run)
    on_failure = run.definition.get("on_failure") or []
    if on_failure and not StepRun.objects.filter(run_id=run.pk, error_path=True).exists():
        _start_list(run, on_failure, 0, "", None, error_path=True)
        logger.info("run %s failed: its error path starts", run.pk)


def _fail_holding_iterations(run: Run, row: StepRun) -> None:
    path = path_of(row)
    error = StepRun.objects.filter(pk=row.pk).values_list("error", flat=True).first() or ""
    loops = StepRun.objects.filter(run_id=run.pk, action_type=tree.FOR_EACH, status=StepRunStatus.WAITING)
    for loop in loops.values_list("pk", "path", "key"):
        prefix = f"{loop[1] or loop[2]}["
        if path.startswith(prefix) and "]/" in path[len(prefix) :]:
            index = path[len(prefix) :].split("]/", 1)[0]
            if index.isdigit():
                StepIteration.objects.filter(loop_id=loop[0], index=int(index), status=StepRunStatus.RUNNING).update(
                    status=StepRunStatus.FAILED, error=error, finished_at=timezone.now()
                )


# -- waking, resuming, approving -----------------------------------------------------------
def wake_due(now: datetime | None = None) -> int:
    """Resume the delays and waits whose ``wake_at`` has come (beat, every POTAFLOW_WAIT_POLL_SECONDS)."""
    now = now or timezone.now()
    due = list(
        StepRun.objects.filter(
            status=StepRunStatus.WAITING, wake_at__lte=now, action_type__in=[tree.DELAY, tree.WAIT]
        ).values_list("pk", flat=True)[:WAKE_BATCH]
    )
    for pk in due:
        _wake(pk)
    return len(due)


def _wake(pk: int) -> None:
    now = timezone.now()
    with transaction.atomic():
        row = StepRun.objects.filter(pk=pk).first()
        if row is None:
            return
        run = _lock_run(row.run_id)
        row = _row(pk)
        if row.status != StepRunStatus.WAITING or run.is_finished:
            return
        if row.action_type == tree.DELAY:
            _resume(run, row, row.output, now)
            return
        config = (spec_of(run, row.key) or {}).get("config") or {}
        if (config.get("on_timeout") or "fail") == "continue":
            _resume(run, row, {"timed_out": True}, now)
            return
        message = f"no answer within timeout_seconds={config.get('timeout_seconds')} (on_timeout: fail)"
        StepRun.objects.filter(pk=pk).update(status=StepRunStatus.FAILED, error=message, finished_at=now, wake_at=None)
        _set_running(run)
        recording.fail_run(run, row, message, now, dead_letter=False)
    logger.info("run %s: %s woke at %s", row.run_id, path_of(row), now.isoformat())


def _set_running(run: Run) -> None:
    if run.status == RunStatus.WAITING:
        Run.objects.filter(pk=run.pk, status=RunStatus.WAITING).update(
            status=RunStatus.RUNNING, last_progress_at=timezone.now()
        )
        run.status = RunStatus.RUNNING


def _resume(run: Run, row: StepRun, output: Any, now: datetime) -> bool:
    if not StepRun.objects.filter(pk=row.pk, status=StepRunStatus.WAITING).update(
        status=StepRunStatus.SUCCEEDED, output=output, finished_at=now, wake_at=None
    ):
        return False
    row.status, row.output = StepRunStatus.SUCCEEDED, output
    _set_running(run)
    _continue_after(run, row)
    return True


def resume_webhook(token: str, body: Any) -> StepRun:
    """A POST to a wait's resume URL: its JSON body becomes the step's output and the run goes on.
    ``FlowError`` 404 for an unknown token, 409 when the wait was resumed (or timed out) before."""
    row = StepRun.objects.filter(resume_token=token).exclude(resume_token="").first()
    if row is None:
        raise FlowError("No wait has this resume URL.", 404)
    with transaction.atomic():
        run = _lock_run(row.run_id)
        if run.is_finished or not _resume(run, row, cap_output(body), timezone.now()):
            raise FlowError("Duplicate: this wait was resumed already (or has ended).", 409)
    return row


def approve(run: Run, key: str, approved: bool, user: Any) -> StepRun:
    """An editor's decision on a waiting approval: the output is ``{approved, by, at}``."""
    rows = list(StepRun.objects.filter(run_id=run.pk, key=key, action_type=tree.WAIT).order_by("position"))
    if not rows:
        raise FlowError(f"This run has no wait step {key!r}.", 404)
    spec = spec_of(run, key) or {}
    if ((spec.get("config") or {}).get("kind") or "webhook") != "approval":
        raise FlowError(f"Step {key!r} waits for a POST to its resume URL, not for an approval.", 400)
    now = timezone.now()
    output = {"approved": bool(approved), "by": getattr(user, "email", ""), "at": now.isoformat()}
    with transaction.atomic():
        locked = _lock_run(run.pk)
        waiting = [r for r in StepRun.objects.filter(pk__in=[r.pk for r in rows]) if r.status == StepRunStatus.WAITING]
        if locked.is_finished or not waiting or not _resume(locked, waiting[0], output, now):
            raise FlowError(f"Step {key!r} is not waiting for an approval (decided already or ended).", 409)
    logger.info("run %s: %s %s by %s", run.pk, key, "approved" if approved else "refused", output["by"])
    return waiting[0]


# -- recovery ----------------------------------------------------------------------------
def pending_chains(run: Run) -> list[list[int]]:
    """The unfinished instances of a run as chains to send again: one per list in progress."""
    return [chain for chain, _first in pending_chains_with_first(run)]


def pending_chains_with_first(run: Run) -> list[tuple[list[int], StepRun]]:
    """``pending_chains``, each with its first instance's row (its message is the one in the broker)."""
    rows = StepRun.objects.filter(
        run_id=run.pk, status__in=[StepRunStatus.PENDING, StepRunStatus.RUNNING, StepRunStatus.RETRYING]
    ).order_by("position")
    groups: dict[tuple[Any, str], tuple[list[int], StepRun]] = {}
    for row in rows:
        groups.setdefault((row.parent_id, scope_of(row)), ([], row))[0].append(row.position)
    return list(groups.values())


def recover_continuation(run: Run) -> None:
    """The task that should have decided what follows a finished instance died after recording it
    (killed between the two commits): decide it again, for each instance whose follow-up is missing --
    its next sibling not written, or the last of an iteration's list with the iteration still open
    (what exists is not written twice, an iteration is counted once). The sweeper calls it for every
    stalled flow run, whether other instances are pending or not: a parallel loop's lost fan-in must
    not wait until its siblings are done."""
    with transaction.atomic():
        locked = _lock_run(run.pk)
        if locked.is_finished and not StepRun.objects.filter(run_id=run.pk, error_path=True).exists():
            return
        rows = list(
            StepRun.objects.filter(run_id=run.pk, status__in=[StepRunStatus.SUCCEEDED, StepRunStatus.FAILED])
            .exclude(action_type__in=[tree.BRANCH, tree.FOR_EACH], status=StepRunStatus.FAILED)
            .order_by("-position")
        )
        written = set(StepRun.objects.filter(run_id=run.pk).values_list("path", flat=True))
        open_iterations = set(
            StepIteration.objects.filter(loop__run_id=run.pk, status=StepRunStatus.RUNNING).values_list(
                "loop_id", "index"
            )
        )
        for row in rows:
            spec = spec_of(locked, row.key) or {}
            if row.status == StepRunStatus.FAILED and not spec.get("continue_on_error"):
                continue
            if _follow_up_written(locked, row, written, open_iterations):
                continue
            _continue_after(locked, row)


def _follow_up_written(run: Run, row: StepRun, written: set[str], open_iterations: set[tuple[Any, int]]) -> bool:
    """Whether what follows ``row`` was decided already (``recover_continuation``)."""
    place = places(run).get(row.key)
    if place is None:
        return True
    if place.index + 1 < len(place.steps):
        return f"{scope_of(row)}{place.steps[place.index + 1].get('key')}" in written
    match = _LOOP_SCOPE.match(scope_of(row))
    if match is not None and row.parent_id is not None:  # the last step of an iteration's body
        return (row.parent_id, int(match["index"])) not in open_iterations
    return False  # the end of a path or of the run: deciding again is cheap and writes nothing twice
