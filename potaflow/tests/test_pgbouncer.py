"""PotaFlow behind a real PgBouncer in transaction pooling (``POTAFLOW_PGBOUNCER=true``).

The PgBouncer (Debian's package, ``testing.services.PgBouncer``) has two
server connections and hands them out in turn, so consecutive transactions of
one client run on different server connections: anything that relied on
session state (a server-side cursor, a prepared statement, a SET, an advisory
lock) breaks here at once rather than under production load. CI also runs the
run-path tests with the worker behind it (``POTAFLOW_TEST_PGBOUNCER=1``, .ci/run).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from accounts.models import Organization
from testing.network import RecordingHTTPServer, Reply
from testing.services import PgBouncer
from testing.worker import wait_for_run
from workflows.models import Run
from workflows.services import run_accept, workflow_create

BASE_DIR = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.services,
    pytest.mark.skipif(shutil.which("pgbouncer") is None, reason="pgbouncer is not installed"),
]

# What a web or worker process does that could rely on session state, in a process of its own
# (settings are read once): an .iterator() outside a transaction, the beat lease, a metrics scrape
# (REPEATABLE READ snapshot), the health check.
PROBE = """
import json, os, django, psycopg
django.setup()
# Two transactions at once: PgBouncer opens both server connections (it hands them out in turn).
warm = [psycopg.connect(os.environ["DATABASE_URL"]) for _ in range(2)]
for conn in warm:
    conn.execute("SELECT 1")
for conn in warm:
    conn.commit()
    conn.close()
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from workflows.scheduling.leader import try_acquire
out = {}
try:
    out["iterated"] = sum(1 for _ in ContentType.objects.order_by("pk").iterator(chunk_size=2))
except Exception as exc:
    out["iterated"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
a = try_acquire("probe-a", 20, name="pgbouncer-probe")
b = try_acquire("probe-b", 20, name="pgbouncer-probe")
again = try_acquire("probe-a", 20, name="pgbouncer-probe")
out["lease"] = [a and a.term, b and b.term, again and again.term]
client = Client()
out["metrics"] = client.get("/metrics", headers={"host": "127.0.0.1"}).status_code
out["healthz"] = client.get("/healthz", headers={"host": "127.0.0.1"}).status_code
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def pgbouncer(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        if connection.vendor != "postgresql":
            pytest.skip("PgBouncer fronts PostgreSQL")
        s = connection.settings_dict
        bouncer = PgBouncer(s.get("HOST") or "127.0.0.1", int(s.get("PORT") or 5432), pool_size=2).start()
    yield bouncer
    bouncer.stop()


def probe(url: str, **env: str) -> dict:
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "potaflow.settings", "DATABASE_URL": url, **env}
    environment.update({"DEBUG": "true", "LOG_LEVEL": "ERROR"})
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_setting_makes_a_process_correct_behind_transaction_pooling(pgbouncer, transactional_db):
    url = pgbouncer.url(connection.settings_dict["NAME"])
    behind = probe(url, POTAFLOW_PGBOUNCER="true")
    assert behind["iterated"] >= 10  # server-side cursors off: one query, read in chunks client-side
    assert behind["lease"] == [1, None, 1]  # the lease row: one holder, renewed, through the pooler
    assert (behind["metrics"], behind["healthz"]) == (200, 200)

    # Without it, Django declares a cursor in one transaction and fetches it in the next, on
    # another server connection: what the setting exists for.
    unaware = probe(url, POTAFLOW_PGBOUNCER="false")
    assert isinstance(unaware["iterated"], str) and "does not exist" in unaware["iterated"], unaware


def test_the_setting_refuses_prepared_statements(tmp_path):
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "potaflow.settings",
        "POTAFLOW_PGBOUNCER": "true",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:6432/potaflow?server_side_binding=true",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "POTAFLOW_PGBOUNCER" in result.stderr and "prepared statements" in result.stderr


@pytest.fixture
def org(transactional_db):
    return Organization.objects.create(name="Bouncer", slug="bouncer")


@pytest.fixture(scope="module")
def peer():
    with RecordingHTTPServer() as server:
        yield server


@pytest.fixture
def celery_worker_env(pgbouncer, peer, django_db_setup):
    return {
        "DATABASE_URL": pgbouncer.url(connection.settings_dict["NAME"]),
        "POTAFLOW_PGBOUNCER": "true",
        "POTAFLOW_ALLOW_PRIVATE_DESTINATIONS": "127.0.0.1",
        "CONN_MAX_AGE": "60",
        "POTAFLOW_ORG_MAX_RUNNING_STEPS": "0",
    }


def test_runs_claim_retry_and_record_through_pgbouncer(celery_worker, peer, org):
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        return Reply(503 if calls["n"] == 1 else 200, {"ok": True})

    peer.reset()
    peer.route("POST", "/effects", flaky)
    workflow = workflow_create(
        organization=org,
        name="through pgbouncer",
                steps=[
            {"key": "shape", "action_type": "transform", "config": {"value": {"n": "{{ trigger.n }}"}}},
            {
                "key": "deliver",
                "action_type": "http.request",
                "config": {"method": "POST", "url": f"{peer.url}/effects", "body_type": "json",
                           "body": {"n": "{{ steps.shape.output.n }}"}},
                "backoff_seconds": 0.2,
                "backoff_max_seconds": 0.5,
            },
        ],
    )  # fmt: skip
    runs = [run_accept(workflow=workflow, trigger="manual", payload={"n": n})[0] for n in range(12)]
    for run in runs:
        run = wait_for_run(run.pk, {"succeeded", "failed"}, timeout=90)
        assert run.status == "succeeded", run.error
    effects = [r.json()["n"] for r in peer.requests if r.path == "/effects"]
    assert sorted(set(effects)) == list(range(12))
    assert len(effects) == 13  # one refused (503), retried once; every other call once
    assert Run.objects.filter(workflow=workflow, status="succeeded").count() == 12
