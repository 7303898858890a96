"""Workers report themselves in the database (workflows/ops/heartbeat.py); /metrics reads it.

The real worker (``celery_worker``) writes its row when ready; any web process
then reports it, whatever host it runs on.
"""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from testing.worker import wait_for
from workflows.models import WorkerHeartbeat

pytestmark = pytest.mark.slow


def test_a_worker_reports_its_memory_and_metrics_show_it(celery_worker):
    row = wait_for(lambda: WorkerHeartbeat.objects.filter(pid=celery_worker.proc.pid).first(), timeout=30,
                   message="the worker's heartbeat row")  # fmt: skip
    assert row.processes >= 2  # the main process and its pool children
    assert 50 * 2**20 < row.rss_bytes < 4 * 2**30
    samples = {
        (sample.name, tuple(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(Client().get("/metrics").content.decode())
        for sample in family.samples
    }
    assert samples[("potaflow_workers_alive", ())] == 1
    assert 50 * 2**20 < samples[("potaflow_worker_resident_memory_bytes", (("worker", row.name),))] < 4 * 2**30


@pytest.mark.django_db
def test_a_silent_worker_stops_counting(settings):
    settings.POTAFLOW_WORKER_HEARTBEAT_SECONDS = 10
    now = timezone.now()
    WorkerHeartbeat.objects.create(name="celery@gone", pid=1, rss_bytes=1, seen_at=now - timedelta(seconds=31))
    WorkerHeartbeat.objects.create(name="celery@here", pid=2, rss_bytes=2, seen_at=now - timedelta(seconds=5))
    body = Client().get("/metrics").content.decode()
    assert "potaflow_workers_alive 1.0" in body
    assert 'worker="celery@here"' in body and "celery@gone" not in body
