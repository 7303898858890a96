"""The shipped monitoring files name only metrics PotaFlow exposes.

Every PromQL expression of deploy/grafana/potaflow.json and
deploy/prometheus/alerts.yml is read, every ``potaflow_*`` name in it must be
a family in a live ``/metrics`` scrape of this code (after a run, a webhook
refusal and a worker heartbeat, so the families carry samples), and the only
other metric allowed is Prometheus' own ``up``. ``promtool check rules`` and
``promtool test rules`` run in .ci/run.
"""

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from workflows.models import WorkerHeartbeat
from workflows.services import run_accept, workflow_create

BASE_DIR = Path(__file__).resolve().parents[2]
DASHBOARD = BASE_DIR / "deploy" / "grafana" / "potaflow.json"
ALERTS = BASE_DIR / "deploy" / "prometheus" / "alerts.yml"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")
PROMQL_WORDS = re.compile(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()")  # identifiers that are not functions
# PromQL keywords, label names and values, units in the expressions (not metric names).
NOT_METRICS = {
    "sum", "max", "min", "avg", "count", "topk", "bottomk", "quantile", "stddev",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "le", "instance", "job", "trigger", "reason", "status", "action", "outcome", "queue", "worker",
}  # fmt: skip


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    rules = yaml.safe_load(ALERTS.read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return exprs


def named_metrics(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    return {word for word in PROMQL_WORDS.findall(expr) if word not in NOT_METRICS}


@pytest.mark.django_db
def test_every_metric_the_dashboard_and_the_alerts_name_is_in_a_live_scrape(client: Client):
    from accounts.models import Organization  # noqa: PLC0415 - the app's model, after Django's setup

    org = Organization.objects.create(name="Deploy", slug="deploy")
    workflow = workflow_create(organization=org, name="w", steps=[
        {"key": "t", "action_type": "transform", "config": {"value": 1}}])  # fmt: skip
    run_accept(workflow=workflow, trigger="manual", payload={})
    WorkerHeartbeat.objects.create(
        name="celery@deploy", pid=1, rss_bytes=1, seen_at=timezone.now() - timedelta(seconds=1)
    )
    assert client.post("/hooks/no-such-token", data=b"{}", content_type="application/json").status_code == 404

    scrape = client.get("/metrics").content.decode()
    families = {family.name for family in text_string_to_metric_families(scrape)}
    names = set().union(*(named_metrics(expr) for expr in expressions()))
    assert len(names) >= 12, names
    missing = set()
    for name in names - {"up"}:
        family = name
        for suffix in SUFFIXES:
            family = family.removesuffix(suffix)
        if family not in families and name not in families:
            missing.add(name)
    assert not missing, f"named by deploy/ but not in /metrics: {sorted(missing)}"
    assert {n for n in names if not n.startswith("potaflow_")} == {"up"}


def test_the_dashboard_is_importable_grafana_json():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "potaflow" and dashboard["title"] == "PotaFlow"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in ("intake", "refused", "finished", "success rate", "step duration p95", "run duration",
                  "queue depth", "oldest unfinished", "dead letters", "worker memory", "waiting"):  # fmt: skip
        assert topic in titles, topic
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all(t["expr"].strip() for t in panel["targets"])
