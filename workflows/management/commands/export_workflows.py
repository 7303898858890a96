"""Write workflows as export documents (``workflows.portability``), one JSON file each.

``manage.py export_workflows --organization acme --output backups/`` writes
``backups/<id>-<name>.json`` for every workflow of the organization; ids
narrow it down. Without ``--output`` the documents are printed as one JSON list.
Documents hold no secrets and no webhook tokens (credentials go by name and kind).
"""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.text import slugify

from workflows.models import Workflow
from workflows.portability import workflow_export


class Command(BaseCommand):
    help = "Export workflows as JSON documents (no secrets): one file per workflow, or a list on stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="*", type=int, help="Workflow ids (default: all of the organization).")
        parser.add_argument("--organization", help="Organization slug.")
        parser.add_argument("--output", help="Directory to write <id>-<name>.json files into.")

    def handle(self, *args: Any, ids: list[int], organization: str | None, output: str | None, **options: Any) -> None:
        workflows = Workflow.objects.order_by("pk")
        if organization:
            workflows = workflows.filter(organization__slug=organization)
        if ids:
            workflows = workflows.filter(pk__in=ids)
            missing = set(ids) - set(workflows.values_list("pk", flat=True))
            if missing:
                raise CommandError(f"No workflow with id {', '.join(map(str, sorted(missing)))}.")
        elif not organization:
            raise CommandError("Say which workflows: ids, or --organization <slug> for all of one organization.")
        documents = [(workflow, workflow_export(workflow)) for workflow in workflows]
        if output is None:
            self.stdout.write(json.dumps([document for _, document in documents], indent=2, ensure_ascii=False))
            return
        folder = Path(output)
        folder.mkdir(parents=True, exist_ok=True)
        for workflow, document in documents:
            path = folder / f"{workflow.pk}-{slugify(workflow.name) or 'workflow'}.json"
            path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
            self.stdout.write(f"wrote {path}")
        self.stdout.write(f"exported {len(documents)} workflow(s)")
