"""Reduced cluster run: ``bench/cluster.py --quick`` loses nothing, duplicates nothing, fires each minute once.

The script builds eleven hosts in network namespaces (PostgreSQL + PgBouncer +
Redis, nginx, two web, three worker, two beat hosts, a recorder, a sender),
sends signed webhooks through the proxy at 4/s and, one of each, kills a
worker host mid-call, cuts another from the database and the broker for 30 s,
kills a web host, restarts every web and worker host in turn and kills the
leading beat host. It needs root (namespaces, veth, iptables; CI runs as root)
and Debian's nginx, pgbouncer, postgresql and redis-server. About 3 minutes.
The RabbitMQ variant (``--broker amqp``) is run by hand for the figures
(bench/README.md).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.timeout(600)]

BASE_DIR = Path(__file__).resolve().parents[2]
NEEDED = ("ip", "unshare", "iptables", "nginx", "pgbouncer", "psql", "redis-server")


def test_the_cluster_survives_its_faults():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    missing = [name for name in NEEDED if shutil.which(name) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "bench" / "cluster.py"), "--quick", "--broker", "redis"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=560,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    summary = output[-6000:]
    print(
        f"cluster (quick, redis): accepted {report['accepted']}, lost {report['lost']}, duplicate effects "
        f"{report['duplicate_effects']}, settle {report['settle_s']} s, sender 5xx {report['sender_5xx']}, "
        f"double-fired {report['double_fired']}, skipped {report['skipped_firings']}; faults {report['faults']}"
    )
    assert report["fault_errors"] == [], summary
    assert {f["kind"] for f in report["faults"]} == {
        "worker-host-killed", "worker-host-cut", "web-host-killed", "rolling-restart", "beat-host-killed",
    }  # fmt: skip
    assert report["accepted"] > 200, summary
    assert report["lost"] == 0, summary
    assert report["duplicate_effects"] == 0, summary
    assert report["succeeded_without_effect"] == 0, summary
    assert report["sender_5xx"] == 0, summary
    assert report["double_fired"] == 0 and report["skipped_firings"] == 0, summary
    assert report["schedule_minutes_checked"] >= 1, summary
    assert [s for s in report["superseded"] if s["why"] == "unexplained"] == [], summary
    assert report["settle_s"] is not None and report["settle_s"] <= 60, summary
