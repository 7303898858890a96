"""Delete finished runs past their retention now (what the ``workflows.prune_runs`` beat task does).

``--dry-run`` prints what would be deleted and deletes nothing. Without it the
deletion runs in batches until nothing expired is left (``--max-runs`` caps it).
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from workflows.ops import retention


class Command(BaseCommand):
    help = "Delete runs past their retention (POTAFLOW_RETAIN_*_DAYS), in batches; --dry-run only counts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Print what would be deleted; delete nothing.")
        parser.add_argument("--batch-size", type=int, default=None, help="Runs per transaction.")
        parser.add_argument("--max-runs", type=int, default=None, help="Stop after deleting this many runs.")

    def handle(self, *args: Any, dry_run: bool, batch_size: int | None, max_runs: int | None, **options: Any) -> None:
        days = ", ".join(
            f"{status} {n or 'forever'}{'' if not n else ' d'}" for status, n in retention.retention_days().items()
        )
        self.stdout.write(f"retention: {days}; dead-lettered: until replayed")
        report = retention.prune(dry_run=dry_run, batch_size=batch_size, max_runs=max_runs or 10**12)
        self.stdout.write(report.summary())
