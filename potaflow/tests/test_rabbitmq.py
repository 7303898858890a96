"""RabbitMQ as the broker (``CELERY_BROKER_URL=amqp://...``): quorum queues, publisher confirms,
retries through Celery's native delayed delivery, and what reads the broker (health check,
``/metrics`` queue gauges, ``potaflow_status``).

Each test starts a ``rabbitmq-server`` node of its own (``testing.services.RabbitMQ``: own node
name, ports, folders and Erlang cookie; about 5 s), never the machine's. The settings are read
once per process, so what needs amqp settings in this process's place runs in a subprocess; the
real worker (``celery_worker``) runs against the node with the test database.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from accounts.models import Organization
from testing.network import RecordingHTTPServer, Reply
from testing.services import RabbitMQ
from testing.worker import test_database_url as database_url
from testing.worker import wait_for_run
from workflows.models import Run, StepAttempt
from workflows.services import workflow_create

BASE_DIR = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("rabbitmq-server") is None, reason="rabbitmq-server is not installed"),
]


def in_process(code: str, broker_url: str, **env: str) -> dict:
    """Run ``code`` (which prints one JSON line last) in a Django process on ``broker_url``."""
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "potaflow.settings",
        "CELERY_BROKER_URL": broker_url,
        "DATABASE_URL": database_url(),
        "DEBUG": "true",
        "LOG_LEVEL": "ERROR",
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django\ndjango.setup()\n" + code],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def rabbit(request):
    node = RabbitMQ().start()
    yield node
    manager = getattr(request.config, "_potaflow_worker_manager", None)
    if manager is not None and manager.worker is not None and node.url in manager.worker.extra_env.values():
        manager.stop()  # the session worker must not outlive its broker
        manager.worker = None
    node.stop()


SETTINGS = """
import json
from django.conf import settings
from potaflow.celery import app
print(json.dumps({
    "queues": {q.name: [q.queue_arguments, q.durable, q.exchange.type] for q in settings.CELERY_TASK_QUEUES},
    "options": app.conf.broker_transport_options,
    "default_queue_type": app.conf.task_default_queue_type,
    "detect_quorum": app.conf.worker_detect_quorum_queues,
}))
"""


def test_amqp_gets_quorum_queues_confirms_and_topic_exchanges():
    amqp = in_process(SETTINGS, "amqp://guest:guest@127.0.0.1:5999//")
    assert amqp["queues"] == {
        "celery": [{"x-queue-type": "quorum"}, True, "topic"],
        "potaflow.recovery": [{"x-queue-type": "quorum"}, True, "topic"],
        "potaflow.schedules": [{"x-queue-type": "quorum"}, True, "topic"],
        "potaflow.tests": [{"x-queue-type": "quorum"}, True, "topic"],
    }
    assert amqp["options"] == {"confirm_publish": True}
    assert (amqp["default_queue_type"], amqp["detect_quorum"]) == ("quorum", True)
    redis = in_process(SETTINGS, "redis://127.0.0.1:6399/0")
    assert redis["queues"]["celery"] == [None, True, "direct"]
    assert "visibility_timeout" in redis["options"]


READERS = """
import json
from django.core.management import call_command
from django.test import Client
from io import StringIO
from potaflow.celery import app
for _ in range(3):
    app.send_task("workflows.recover_stalled_runs")
client = Client()
health = client.get("/healthz", headers={"host": "127.0.0.1"})
metrics = client.get("/metrics", headers={"host": "127.0.0.1"}).content.decode()
status = StringIO()
call_command("potaflow_status", "--json", stdout=status)
print(json.dumps({
    "health": [health.status_code, health.json()],
    "gauges": [line for line in metrics.splitlines() if line.startswith("potaflow_broker_queue_length{")],
    "status": json.loads(status.getvalue()),
}))
"""


@pytest.mark.django_db(transaction=True)
def test_health_metrics_and_status_read_the_quorum_queues(rabbit):
    out = in_process(READERS, rabbit.url)
    code, body = out["health"]
    assert code == 200 and body["broker"] == "ok" and body["broker_rtt_ms"] > 0, body
    assert sorted(out["gauges"]) == [
        'potaflow_broker_queue_length{queue="celery"} 3.0',
        'potaflow_broker_queue_length{queue="potaflow.recovery"} 0.0',
        'potaflow_broker_queue_length{queue="potaflow.schedules"} 0.0',
        'potaflow_broker_queue_length{queue="potaflow.tests"} 0.0',
    ]
    assert out["status"]["queue_length"] == 3, out["status"]


ACCEPT = """
import json
from workflows.models import Workflow
from workflows.services import run_accept
workflow = Workflow.objects.get(pk=WORKFLOW)
print(json.dumps([str(run_accept(workflow=workflow, trigger="manual", payload={"n": n})[0].pk) for n in range(8)]))
"""


@pytest.fixture
def peer():
    with RecordingHTTPServer() as server:
        yield server


@pytest.fixture
def celery_worker_env(rabbit):
    return {"CELERY_BROKER_URL": rabbit.url, "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": "127.0.0.1"}


def test_runs_and_delayed_retries_go_through_rabbitmq(celery_worker, rabbit, peer):
    refused: set[int] = set()

    def first_call_refused(request):
        n = request.json()["n"]
        if n not in refused:
            refused.add(n)
            return Reply(503, {"busy": True})
        return Reply(200, {"ok": True})

    peer.route("POST", "/effects", first_call_refused)
    org = Organization.objects.create(name="Rabbit", slug="rabbit")
    workflow = workflow_create(
        organization=org,
        name="on rabbitmq",
        steps=[
            {"key": "shape", "action_type": "transform", "config": {"value": {"n": "{{ trigger.n }}"}}},
            {
                "key": "deliver",
                "action_type": "http.request",
                "config": {"method": "POST", "url": f"{peer.url}/effects", "body_type": "json",
                           "body": {"n": "{{ steps.shape.output.n }}"}},
                "backoff_seconds": 1,
                "backoff_max_seconds": 2,
            },
        ],
    )  # fmt: skip
    run_ids = in_process(ACCEPT.replace("WORKFLOW", str(workflow.pk)), rabbit.url)
    for run_id in run_ids:
        run = wait_for_run(run_id, {"succeeded", "failed"}, timeout=90)
        assert run.status == "succeeded", run.error
    calls = [r.json()["n"] for r in peer.requests if r.path == "/effects"]
    assert sorted(calls) == sorted(list(range(8)) * 2)  # each refused once, then once more after its delay
    outcomes = list(StepAttempt.objects.filter(step_run__run__workflow=workflow, step_run__key="deliver")
                    .values_list("outcome", flat=True))  # fmt: skip
    assert sorted(outcomes) == ["retryable_error"] * 8 + ["succeeded"] * 8
    assert Run.objects.filter(workflow=workflow, status="succeeded").count() == 8
