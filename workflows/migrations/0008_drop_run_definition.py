# Step 3 of 3: every run points at its version; the per-run copy goes.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0007_runs_to_versions'),
    ]

    operations = [
        migrations.RemoveField(
            model_name='run',
            name='definition',
        ),
        migrations.AlterField(
            model_name='run',
            name='version',
            field=models.ForeignKey(on_delete=django.db.models.deletion.RESTRICT, related_name='runs', to='workflows.workflowversion'),
        ),
    ]
