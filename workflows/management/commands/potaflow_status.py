"""``manage.py potaflow_status [--json] [--schedules N]``: the operator's one-screen summary."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from workflows.ops.status import StatusReport, status_report


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{status} {n}" for status, n in counts.items())


class Command(BaseCommand):
    help = (
        "Queue depth, recent runs by status, dead letters, schedules due next, waiting runs and the delays and "
        "waits due next, retention in force."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the report as one JSON object.")
        parser.add_argument("--schedules", type=int, default=5, help="How many upcoming schedules to list.")
        parser.add_argument("--waits", type=int, default=5, help="How many delays and waits due next to list.")

    def handle(self, *args: Any, **options: Any) -> None:
        report = status_report(schedules=options["schedules"], waits=options["waits"])
        if options["json"]:
            self.stdout.write(json.dumps(report.as_json(), indent=2))
            return
        self.stdout.write("\n".join(render(report)))


def render(report: StatusReport) -> list[str]:
    lines = [f"PotaFlow status at {report.at:%Y-%m-%d %H:%M:%S %Z}", ""]
    if report.broker_error:
        lines.append(f"Broker:       UNREACHABLE ({report.broker_error})")
    else:
        lines.append(
            f"Broker:       queue {report.queue!r}: {report.queue_length} message(s) waiting "
            f"(round trip {report.broker_rtt_ms:.1f} ms)"
        )
    recent_total = sum(report.recent_by_status.values())
    lines.append(f"Last hour:    {recent_total} run(s) created: {_counts(report.recent_by_status)}")
    oldest = report.oldest_unfinished_age_seconds
    age = f"; oldest accepted {_duration(oldest)} ago" if oldest is not None else ""
    lines.append(f"Unfinished:   {_counts(report.unfinished_by_status)}{age}")
    lines.append(f"Dead letters: {report.dead_lettered_total} in total, {report.dead_lettered_recent} in the last hour")
    lines.append(f"Files:        {report.file_count} file(s), {report.file_bytes} bytes in {report.file_storage}")
    lines.append("")
    lines.append("Schedules due next:" if report.schedules else "Schedules due next: none enabled")
    for due in report.schedules:
        lines.append(f"  {due.at:%Y-%m-%d %H:%M %Z}  {due.workflow} (workflow {due.workflow_id}; {due.cron})")
    lines.append("")
    waiting = sum(report.waiting_by_kind.values())
    lines.append(f"Waiting:      {waiting} run(s): {_counts(report.waiting_by_kind)}")
    lines.append("Waits due next:" if report.waits else "Waits due next: none with a time")
    for wait in report.waits:
        lines.append(
            f"  {wait.at:%Y-%m-%d %H:%M:%S %Z}  {wait.kind:<8} {wait.step} of run {wait.run_id} "
            f"({wait.workflow}, workflow {wait.workflow_id})"
        )
    lines.append("")
    lines.append("Retention in force:")
    for status, entry in report.retention.items():
        days = entry["days"]
        kept = f"{days} day(s)" if days else ("forever (not configured)" if days is None else "forever")
        lines.append(f"  {status:<10} runs kept {kept}  [{entry['setting']}]")
    return lines
