# Each definition stored once (WorkflowVersion), referenced by runs.
# Step 1 of 3: the table and a nullable Run.version (0007 fills it, 0008 drops Run.definition).

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0005_metric_baseline'),
    ]

    operations = [
        migrations.CreateModel(
            name='WorkflowVersion',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('number', models.PositiveIntegerField()),
                ('definition', models.JSONField(default=dict, help_text='The workflow and steps runs of this version execute.')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('workflow', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='versions', to='workflows.workflow')),
            ],
            options={
                'ordering': ['workflow_id', '-number'],
                'constraints': [models.UniqueConstraint(fields=('workflow', 'number'), name='unique_workflow_version_number')],
            },
        ),
        migrations.AddField(
            model_name='run',
            name='version',
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.RESTRICT, related_name='runs', to='workflows.workflowversion'),
        ),
    ]
