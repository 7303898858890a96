"""The cron rule: what a schedule expression means and when it fires next.

The one module beat (``workflows.scheduling.scheduler``), ``potaflow_status``,
the admin and member previews and the API (``next_firings``) ask, so what a
preview shows is what beat does.

Why not Celery's ``crontab``: it requires day of month AND day of week to
match. Users write cron as POSIX cron reads it, and this module follows
Vixie/POSIX cron:

- when both day of month and day of week are restricted (neither starts with
  ``*``), a day matches when EITHER does (``0 9 1 * 1``: the 1st and every
  Monday); when one starts with ``*`` (``*/2`` included), both must match;
- ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``
  and ``@hourly`` are their 5-field forms;
- times are wall-clock times of the schedule's time zone. Across a DST change a
  "fixed" job (minute and hour fields not starting with ``*``) fires once: a
  time the clock skips fires when the clock jumps past it, a time the clock
  shows twice fires at its first pass. A "wildcard" job (``*/15 * * * *``)
  fires at each time the clock actually shows: none in a skipped hour, both
  passes of a repeated one.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.schedules import crontab
from croniter import croniter

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# The largest jump of a wall clock at a DST change (Lord Howe: 30 min; everyone else: 1 h) is well under this.
_DST_WINDOW = timedelta(hours=3)


class ScheduleError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_cron(expression: str) -> tuple[str, str, str, str, str]:
    """The 5 fields (minute hour day-of-month month day-of-week) of an expression or ``@`` alias, checked."""
    text = ALIASES.get(expression.strip().lower(), expression)
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(
            "schedule",
            f"{expression!r} is not a 5-field cron expression (minute hour day-of-month month day-of-week) "
            f"nor one of {', '.join(ALIASES)}; it has {len(fields)} field(s)",
        )
    if not croniter.is_valid(" ".join(fields)):
        raise ScheduleError("schedule", f"{expression!r} is not a valid cron expression")
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        # The fields are kept in django-celery-beat's CrontabSchedule row, which builds a Celery crontab
        # from them: reject what croniter accepts but Celery cannot parse.
        crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month, day_of_week=day_of_week)
    except Exception as exc:  # noqa: BLE001 - celery raises several types for bad fields
        raise ScheduleError("schedule", f"{expression!r} is not a valid cron expression: {exc}") from None
    return minute, hour, day_of_month, month, day_of_week


def check_timezone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScheduleError("timezone", f"{name!r} is not a known IANA time zone (e.g. 'Europe/Paris')") from None


class Cron:
    """A parsed expression in a time zone; ``next_after`` is the rule."""

    def __init__(self, expression: str, zone: zoneinfo.ZoneInfo | str) -> None:
        self.fields = parse_cron(expression)
        self.zone = zone if isinstance(zone, zoneinfo.ZoneInfo) else check_timezone(zone)
        minute, hour, day_of_month, _month, day_of_week = self.fields
        self.expression = " ".join(self.fields)
        # POSIX: either day field matches only when both are restricted.
        self.day_or = not (day_of_month.startswith("*") or day_of_week.startswith("*"))
        self.wildcard = minute.startswith("*") or hour.startswith("*")

    def next_after(self, after: datetime) -> datetime:
        """The first firing strictly after ``after`` (aware), in the schedule's time zone."""
        after = after.astimezone(UTC)
        # Walk wall-clock times from a little before; instants are not in wall-clock order across a
        # fall-back, so collect the wall times up to the window past the first one that fires later.
        wall = after.astimezone(self.zone).replace(tzinfo=None) - _DST_WINDOW
        walls = croniter(self.expression, wall, day_or=self.day_or)
        best: datetime | None = None
        limit: datetime | None = None
        while True:
            candidate: datetime = walls.get_next(datetime)
            if limit is not None and candidate > limit:
                assert best is not None  # noqa: S101 - limit is only set with best
                return best.astimezone(self.zone)
            for instant in self._instants(candidate):
                if instant > after and (best is None or instant < best):
                    best = instant
                    limit = candidate + _DST_WINDOW

    def _instants(self, wall: datetime) -> list[datetime]:
        """The instants (UTC) a matching wall-clock time fires at, by the DST rule in the module doc."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        second = wall.replace(tzinfo=self.zone, fold=1)
        if _wall(first.astimezone(UTC), self.zone) != wall:  # a time the clock skips
            if self.wildcard:
                return []
            jump = wall
            while _wall(jump.replace(tzinfo=self.zone).astimezone(UTC), self.zone) != jump:
                jump += timedelta(minutes=1)
            return [jump.replace(tzinfo=self.zone).astimezone(UTC)]
        if first.utcoffset() != second.utcoffset() and self.wildcard:  # shown twice
            return [first.astimezone(UTC), second.astimezone(UTC)]
        return [first.astimezone(UTC)]

    def firings(self, *, after: datetime, count: int) -> list[datetime]:
        out: list[datetime] = []
        for _ in range(count):
            after = self.next_after(after)
            out.append(after)
        return out


def cron_expression(row: Any) -> str:
    """The 5-field expression of a django-celery-beat ``CrontabSchedule`` row."""
    return f"{row.minute} {row.hour} {row.day_of_month} {row.month_of_year} {row.day_of_week}"


def _wall(instant: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def next_firings(expression: str, tz_name: str, *, count: int = 3, now: datetime | None = None) -> list[datetime]:
    """The next ``count`` firing times in the schedule's time zone (what beat does); [] for a bad expression/zone."""
    try:
        cron = Cron(expression, tz_name or "UTC")
    except ScheduleError:
        return []
    return cron.firings(after=now or datetime.now(UTC), count=count)
