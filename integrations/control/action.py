"""The flow control steps: what their configs say, and the decisions they take from a rendered config.

The engine (``workflows.execution``) executes control steps itself: it renders
the step's own config (``own_config``: without the nested step lists, which
each nested step renders when it runs) and asks the step class what it decided
(``Branch.choose``, ``ForEach.items_of``, ``Delay.resume_at``,
``Wait.timeout_at``, ``Stop.outcome``). The dry run and the builder show
``preview`` of the same rendered config. ``run`` is never called: a control
step reaching a worker as a plain action is a bug, and it says so.

The nested lists (``branch``'s ``paths[i].steps`` and ``otherwise``,
``for_each``'s ``steps``) hold step specs of the same shape as top-level ones;
``workflows.flow.tree`` walks them and ``workflows.validation`` checks each
nested step as it checks a top-level one.
"""

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings

from integrations.base import Action, ActionContext, PreviewCredential
from integrations.builtin.filter import truthy
from integrations.errors import ConfigError, PermanentError
from integrations.storable import JSONValue
from integrations.template_syntax import is_template

PATH_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
OTHERWISE = "otherwise"
MAX_DELAY_SECONDS = 366 * 24 * 3600  # a year and a day: longer waits are a schedule's job
MAX_WAIT_SECONDS = 366 * 24 * 3600

STEP_LIST: dict[str, Any] = {
    "type": "array",
    "items": {"type": "object", "description": "A step: {key, action_type, config, ...} like a top-level step."},
    "description": "Steps, each of the same shape as a top-level step.",
}


def max_items_ceiling() -> int:
    """The most items a ``for_each`` may be allowed (``POTAFLOW_FOR_EACH_MAX_ITEMS``)."""
    return int(settings.POTAFLOW_FOR_EACH_MAX_ITEMS)


def max_parallel() -> int:
    """The most iterations of one ``for_each`` at once (``POTAFLOW_FOR_EACH_MAX_PARALLEL``)."""
    return int(settings.POTAFLOW_FOR_EACH_MAX_PARALLEL)


class ControlAction(Action):
    """A step the engine executes itself (no outside call, no worker hop of its own)."""

    control: ClassVar[bool] = True
    has_side_effects = False
    # Config fields holding nested step lists, left out of what is rendered (``own_config``).
    nested_fields: ClassVar[tuple[str, ...]] = ()

    def run(self, config: dict[str, Any], ctx: ActionContext) -> JSONValue:
        raise PermanentError(
            f"{self.name} is a flow control step: the engine executes it, it cannot run as an action "
            f"(step {ctx.step_key!r})"
        )

    def own_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in config.items() if k not in self.nested_fields}

    def preview(self, config: Mapping[str, Any], credential: PreviewCredential | None = None) -> dict[str, JSONValue]:
        """What the step would decide with this rendered config (dry runs and the builder)."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "control": True}


def _literal(value: Any) -> bool:
    """A value given as is (not a template, whose value is known only at run time)."""
    return not (isinstance(value, str) and is_template(value))


# -- branch -----------------------------------------------------------------------------
class Branch(ControlAction):
    name = "branch"
    title = "Branch"
    description = (
        "Chooses a path: each path has a name, a condition (when) and steps; 'otherwise' runs when no "
        "condition holds. Mode 'first' takes the first path whose condition holds, 'all' every one."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "paths": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "pattern": PATH_NAME_PATTERN, "description": "e.g. vip"},
                        "when": {"description": "A condition, e.g. trigger.body.amount > 100."},
                        "steps": STEP_LIST,
                    },
                    "required": ["name", "when"],
                    "additionalProperties": False,
                },
            },
            OTHERWISE: {**STEP_LIST, "description": "Steps run when no path's condition holds."},
            "mode": {
                "enum": ["first", "all"],
                "default": "first",
                "description": "first: the first path whose condition holds; all: every one, in order.",
            },
        },
        "required": ["paths"],
        "additionalProperties": False,
    }
    expression_items = (("paths", "when"),)
    condition_fields = ("when",)  # a path's condition: an undefined value is false (the filter's rule)
    nested_fields = ("otherwise",)

    def own_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        own = super().own_config(config)
        paths = own.get("paths")
        if isinstance(paths, list):
            own["paths"] = [
                {k: v for k, v in p.items() if k != "steps"} if isinstance(p, Mapping) else p for p in paths
            ]
        return own

    def validate_config(self, config: Any) -> None:
        super().validate_config(config)
        seen: set[str] = set()
        for i, path in enumerate(config.get("paths") or []):
            name = path.get("name")
            if name == OTHERWISE:
                raise ConfigError(
                    f"config.paths[{i}].name: {OTHERWISE!r} is the name of the steps run when no path matches; "
                    "choose another name",
                    field=f"config.paths[{i}].name",
                )
            if name in seen:
                raise ConfigError(
                    f"config.paths[{i}].name: the path name {name!r} is used by an earlier path; "
                    "path names must be unique in a branch",
                    field=f"config.paths[{i}].name",
                )
            seen.add(name)
            when = path.get("when")
            if when is None or (isinstance(when, str) and not when.strip()):
                raise ConfigError(
                    f"config.paths[{i}].when: path {name!r} needs a condition, e.g. trigger.body.amount > 100",
                    field=f"config.paths[{i}].when",
                )

    def choose(self, config: Mapping[str, Any]) -> list[str]:
        """The names of the paths taken with this rendered config (``["otherwise"]`` when none holds)."""
        taken = [str(p["name"]) for p in config.get("paths") or [] if truthy(p.get("when"))]
        if config.get("mode", "first") != "all":
            taken = taken[:1]
        return taken or [OTHERWISE]

    def preview(self, config: Mapping[str, Any], credential: PreviewCredential | None = None) -> dict[str, JSONValue]:
        conditions: list[JSONValue] = [
            {"name": str(p.get("name")), "when": p.get("when"), "holds": truthy(p.get("when"))}
            for p in config.get("paths") or []
        ]
        taken: list[JSONValue] = list(self.choose(config))
        return {"mode": config.get("mode", "first"), "taken": taken, "conditions": conditions}


# -- for_each ---------------------------------------------------------------------------
class ForEach(ControlAction):
    name = "for_each"
    title = "For each item"
    description = (
        "Runs its steps once per item of a list, with item and index in their templates, e.g. "
        '{"items": "trigger.body.lines", "steps": [...]}. Its output is the list of each iteration\'s result.'
    )
    config_schema = {
        "type": "object",
        "properties": {
            "items": {"description": "An expression giving a list, e.g. trigger.body.lines."},
            "steps": {**STEP_LIST, "description": "Steps run once per item (item and index in their templates)."},
            "parallel": {
                "type": "integer",
                "minimum": 1,
                "default": 1,
                "description": "Iterations at once (default 1: one after the other).",
            },
            "on_item_failure": {
                "enum": ["stop", "continue"],
                "default": "stop",
                "description": "stop: a failed iteration fails the loop; continue: the others go on.",
            },
            "max_items": {
                "type": "integer",
                "minimum": 1,
                "default": 1000,
                "description": "More items than this fail the step (at most POTAFLOW_FOR_EACH_MAX_ITEMS).",
            },
        },
        "required": ["items", "steps"],
        "additionalProperties": False,
    }
    expression_fields = ("items",)
    nested_fields = ("steps",)

    def validate_config(self, config: Any) -> None:
        super().validate_config(config)
        ceiling, most = max_items_ceiling(), max_parallel()
        max_items = config.get("max_items")
        if _literal(max_items) and isinstance(max_items, int) and max_items > ceiling:
            raise ConfigError(
                f"config.max_items: at most {ceiling:,} items (POTAFLOW_FOR_EACH_MAX_ITEMS); got {max_items:,}",
                field="config.max_items",
            )
        parallel = config.get("parallel")
        if _literal(parallel) and isinstance(parallel, int) and parallel > most:
            raise ConfigError(
                f"config.parallel: at most {most} iterations at once (POTAFLOW_FOR_EACH_MAX_PARALLEL); got {parallel}",
                field="config.parallel",
            )
        items = config.get("items")
        if isinstance(items, str) and not items.strip():
            raise ConfigError("config.items: give the list to loop over, e.g. trigger.body.lines", field="config.items")

    def limit(self, config: Mapping[str, Any]) -> int:
        """The most items this loop accepts (its ``max_items``, never above the operator's ceiling)."""
        ceiling = max_items_ceiling()
        value = config.get("max_items")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return min(1000, ceiling)
        return min(value, ceiling)

    def items_of(self, config: Mapping[str, Any]) -> list[Any]:
        """The items of a rendered config; raises ``PermanentError`` naming the problem or the limit."""
        items = config.get("items")
        if isinstance(items, Mapping):
            raise PermanentError(
                "for_each: items is an object, not a list (to loop over its entries use "
                "{{ x | dictsort }} or {{ x.values() | list }})"
            )
        if not isinstance(items, list):
            raise PermanentError(f"for_each: items must be a list, got {type(items).__name__}: {items!r:.100}")
        limit = self.limit(config)
        if len(items) > limit:
            raise PermanentError(
                f"for_each: {len(items):,} items is more than max_items ({limit:,}); raise max_items "
                f"(up to POTAFLOW_FOR_EACH_MAX_ITEMS, {max_items_ceiling():,}) or split the list"
            )
        return items

    def parallelism(self, config: Mapping[str, Any]) -> int:
        value = config.get("parallel")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return 1
        return min(value, max_parallel())

    def preview(self, config: Mapping[str, Any], credential: PreviewCredential | None = None) -> dict[str, JSONValue]:
        items = config.get("items")
        count: JSONValue = len(items) if isinstance(items, list) else None
        return {
            "items": count,
            "max_items": self.limit(config),
            "parallel": self.parallelism(config),
            "on_item_failure": config.get("on_item_failure", "stop"),
        }


# -- delay --------------------------------------------------------------------------------
def _zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Paris)") from exc


def parse_until(value: Any, timezone_name: Any = None) -> datetime:
    """An ISO 8601 time; without an offset it is read in ``timezone_name`` (UTC when none)."""
    if isinstance(value, datetime):
        when = value
    else:
        text = str(value).strip()
        try:
            when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO 8601 time such as 2030-01-31T09:00:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_zone(timezone_name) if timezone_name else ZoneInfo("UTC"))
    return when


class Delay(ControlAction):
    name = "delay"
    title = "Delay"
    description = (
        'Pauses the run for a number of seconds ({"seconds": 3600}) or until a time '
        '({"until": "{{ trigger.body.remind_at }}", "timezone": "Europe/Paris"}). Durable: kept in the '
        "database, resumed by the scheduler."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_DELAY_SECONDS,
                "description": "How long to wait, in seconds.",
            },
            "until": {"type": "string", "description": "An ISO 8601 time, e.g. 2030-01-31T09:00:00 (or a template)."},
            "timezone": {
                "type": "string",
                "description": "The IANA time zone of an until without an offset (default UTC).",
            },
        },
        "additionalProperties": False,
    }

    def validate_config(self, config: Any) -> None:
        super().validate_config(config)
        has_seconds, has_until = config.get("seconds") is not None, config.get("until") not in (None, "")
        if has_seconds == has_until:
            raise ConfigError(
                "config: a delay needs either seconds or until (not both), "
                'e.g. {"seconds": 3600} or {"until": "2030-01-31T09:00:00"}',
                field="config.seconds" if has_seconds else "config",
            )
        zone = config.get("timezone")
        if zone not in (None, "") and _literal(zone):
            try:
                _zone(zone)
            except ValueError as exc:
                raise ConfigError(f"config.timezone: {exc}", field="config.timezone") from None
        until = config.get("until")
        if has_until and _literal(until):
            try:
                parse_until(until, zone if _literal(zone) and zone else None)
            except ValueError as exc:
                raise ConfigError(f"config.until: {exc}", field="config.until") from None

    def resume_at(self, config: Mapping[str, Any], now: datetime) -> datetime:
        """When the run goes on (never before ``now``); raises ``PermanentError`` for a bad rendered value."""
        seconds = config.get("seconds")
        if seconds is not None:
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
                raise PermanentError(f"delay: seconds must be a number, got {seconds!r:.100}")
            if not 0 <= seconds <= MAX_DELAY_SECONDS:
                raise PermanentError(f"delay: seconds must be between 0 and {MAX_DELAY_SECONDS:,}, got {seconds:,}")
            return now + timedelta(seconds=seconds)
        try:
            when = parse_until(config.get("until"), config.get("timezone") or None)
        except ValueError as exc:
            raise PermanentError(f"delay: until: {exc}") from None
        return max(when, now)

    def preview(self, config: Mapping[str, Any], credential: PreviewCredential | None = None) -> dict[str, JSONValue]:
        from django.utils import timezone  # noqa: PLC0415 - the clock of the process that previews

        now = timezone.now()
        try:
            when = self.resume_at(config, now)
        except PermanentError as exc:
            return {"error": str(exc)}
        return {"resume_at": when.isoformat(), "wait_seconds": round((when - now).total_seconds(), 3)}


# -- wait -----------------------------------------------------------------------------------
class Wait(ControlAction):
    name = "wait"
    title = "Wait"
    description = (
        "Pauses the run until an outside event: kind 'webhook', a POST of JSON to the run's resume URL "
        "(the body becomes this step's output), or kind 'approval', an editor approving or refusing on the "
        "run's page (output: approved, by, at). Durable; timeout_seconds with on_timeout fail or continue."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "kind": {
                "enum": ["webhook", "approval"],
                "default": "webhook",
                "description": "webhook: resumed by a POST to the resume URL; approval: by an editor.",
            },
            "timeout_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_WAIT_SECONDS,
                "description": "Give up after this long (none: wait until resumed).",
            },
            "on_timeout": {
                "enum": ["fail", "continue"],
                "default": "fail",
                "description": "fail: the run fails; continue: the run goes on (output timed_out: true).",
            },
            "message": {"type": "string", "description": "Shown to approvers (approval only)."},
        },
        "additionalProperties": False,
    }

    def validate_config(self, config: Any) -> None:
        super().validate_config(config)
        if config.get("on_timeout") == "continue" and config.get("timeout_seconds") is None:
            raise ConfigError(
                "config.on_timeout: 'continue' needs timeout_seconds (how long to wait before continuing)",
                field="config.on_timeout",
            )

    def timeout_at(self, config: Mapping[str, Any], now: datetime) -> datetime | None:
        seconds = config.get("timeout_seconds")
        if seconds is None:
            return None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= MAX_WAIT_SECONDS:
            raise PermanentError(f"wait: timeout_seconds must be a number of seconds, got {seconds!r:.100}")
        return now + timedelta(seconds=seconds)

    def preview(self, config: Mapping[str, Any], credential: PreviewCredential | None = None) -> dict[str, JSONValue]:
        return {
            "kind": config.get("kind", "webhook"),
            "timeout_seconds": config.get("timeout_seconds"),
            "on_timeout": config.get("on_timeout", "fail"),
            "resumed_by": "an editor approving or refusing on the run's page"
            if config.get("kind") == "approval"
            else "a POST of JSON to the run's resume URL",
        }


# -- stop -------------------------------------------------------------------------------------
class Stop(ControlAction):
    name = "stop"
    title = "Stop"
    description = 'Ends the run now as succeeded, filtered or failed, with a message, e.g. {"status": "filtered"}.'
    config_schema = {
        "type": "object",
        "properties": {
            "status": {
                "enum": ["succeeded", "filtered", "failed"],
                "default": "succeeded",
                "description": "How the run ends.",
            },
            "message": {"type": "string", "description": "Why (a template); recorded on the run."},
        },
        "additionalProperties": False,
    }

    def outcome(self, config: Mapping[str, Any]) -> tuple[str, str]:
        """(status, message) of a rendered config."""
        status = config.get("status") or "succeeded"
        if status not in ("succeeded", "filtered", "failed"):
            raise PermanentError(f"stop: status must be succeeded, filtered or failed, got {status!r:.100}")
        message = config.get("message")
        return str(status), "" if message is None else str(message)

    def preview(self, config: Mapping[str, Any], credential: PreviewCredential | None = None) -> dict[str, JSONValue]:
        try:
            status, message = self.outcome(config)
        except PermanentError as exc:
            return {"error": str(exc)}
        return {"status": status, "message": message}
