"""Step 2 of 3: one WorkflowVersion per distinct (workflow, workflow_version) of the existing runs.

Runs of the same version hold the same definition (every change bumps the
version); the latest run's copy is kept. Reversible: the definition is copied
back into the runs (0006 re-adds the column when going backwards).
"""

from django.db import migrations
from django.db.models import Min


def forwards(apps, schema_editor):
    Run = apps.get_model("workflows", "Run")
    WorkflowVersion = apps.get_model("workflows", "WorkflowVersion")
    pairs = (
        Run.objects.filter(version__isnull=True)
        .values("workflow_id", "workflow_version")
        .annotate(first=Min("created_at"))
        .order_by("workflow_id", "workflow_version")
    )
    for pair in pairs.iterator():
        runs = Run.objects.filter(workflow_id=pair["workflow_id"], workflow_version=pair["workflow_version"])
        definition = runs.order_by("-created_at").values_list("definition", flat=True).first()
        version, _ = WorkflowVersion.objects.get_or_create(
            workflow_id=pair["workflow_id"],
            number=pair["workflow_version"],
            defaults={"definition": definition or {}, "created_at": pair["first"]},
        )
        runs.update(version=version)


def backwards(apps, schema_editor):
    Run = apps.get_model("workflows", "Run")
    WorkflowVersion = apps.get_model("workflows", "WorkflowVersion")
    for version in WorkflowVersion.objects.iterator():
        Run.objects.filter(version=version).update(definition=version.definition)


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0006_workflow_versions'),
    ]

    operations = [
        migrations.RunPython(forwards, backwards),
    ]
