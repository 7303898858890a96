# Indexes every run and step run paid for on insert and nothing needed (issue 11, intake):
# an index whose columns start another index (run.workflow_id, steprun.run_id, workflowversion.workflow_id,
# stepattempt.step_run_id) and one no query uses (steprun.key, with its _like twin).
# On PostgreSQL Django drops each index and re-adds the foreign key around it; the
# re-added key is validated with one scan of the table.


import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0009_run_list_keyset_indexes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='run',
            name='workflow',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='runs', to='workflows.workflow'),
        ),
        migrations.AlterField(
            model_name='stepattempt',
            name='step_run',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='attempt_log', to='workflows.steprun'),
        ),
        migrations.AlterField(
            model_name='steprun',
            name='key',
            field=models.SlugField(db_index=False, max_length=64),
        ),
        migrations.AlterField(
            model_name='steprun',
            name='run',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='step_runs', to='workflows.run'),
        ),
        migrations.AlterField(
            model_name='workflowversion',
            name='workflow',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='versions', to='workflows.workflow'),
        ),
    ]
