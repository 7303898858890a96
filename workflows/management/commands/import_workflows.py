"""Create workflows from export documents (files holding one document or a list of them).

``manage.py import_workflows --organization acme backups/*.json``. Each
workflow is created inactive, its credential references mapped to the
organization's credentials by name and kind. A document with problems is
reported with every problem and skipped; the others are imported; the command
fails (exit status 1) when any document was skipped.
"""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Organization
from workflows.portability import workflow_import
from workflows.validation import WorkflowInvalid


class Command(BaseCommand):
    help = "Import workflows (created inactive) from export documents into an organization."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", help="JSON files: a document or a list of documents each.")
        parser.add_argument("--organization", required=True, help="Slug of the organization to import into.")

    def handle(self, *args: Any, files: list[str], organization: str, **options: Any) -> None:
        org = Organization.objects.filter(slug=organization).first()
        if org is None:
            raise CommandError(f"No organization with slug {organization!r}.")
        imported, skipped = 0, 0
        for name in files:
            try:
                content = json.loads(Path(name).read_text())
            except (OSError, ValueError) as exc:
                self.stderr.write(f"{name}: cannot read a JSON document: {exc}")
                skipped += 1
                continue
            documents = content if isinstance(content, list) else [content]
            for index, document in enumerate(documents):
                label = name if len(documents) == 1 else f"{name}[{index}]"
                try:
                    workflow = workflow_import(organization=org, document=document)
                except WorkflowInvalid as exc:
                    skipped += 1
                    self.stderr.write(f"{label}: not imported:")
                    for field, messages in exc.errors.items():
                        for message in messages:
                            self.stderr.write(f"  {field}: {message}")
                    continue
                imported += 1
                self.stdout.write(f"{label}: imported as workflow {workflow.pk} {workflow.name!r} (inactive)")
        self.stdout.write(f"imported {imported} workflow(s), skipped {skipped}")
        if skipped:
            raise CommandError(f"{skipped} document(s) were not imported (see above).")
