"""http.request keeps connections alive per checked destination, and the SSRF guard still decides each call."""

import threading

import pytest

from integrations.errors import PermanentError
from integrations.http import pools
from integrations.http.action import HttpRequest
from integrations.tests.support import make_ctx
from testing.network import Reply

action = HttpRequest()


@pytest.fixture(autouse=True)
def cold_pools():
    pools.clear()
    yield
    pools.clear()


def test_two_calls_to_one_destination_share_one_connection(allow_loopback, http_server):
    http_server.route("GET", "/a", Reply(200, {"n": 1}))
    http_server.route("POST", "/b", Reply(201, {"n": 2}))
    first = action.run({"url": f"{http_server.url}/a"}, make_ctx())
    second = action.run({"method": "POST", "url": f"{http_server.url}/b", "body": {"x": 1}}, make_ctx())
    assert (first["status"], second["status"]) == (200, 201)
    assert len(http_server.requests) == 2
    assert http_server.connections == 1


def test_a_truncated_body_does_not_leave_its_connection_for_the_next_call(allow_loopback, http_server, settings):
    settings.POTAFLOW_STEP_OUTPUT_MAX_BYTES = 10
    http_server.route("GET", "/big", Reply(200, "x" * 100_000))
    http_server.route("GET", "/small", Reply(200, "ok"))
    assert action.run({"url": f"{http_server.url}/big"}, make_ctx())["body_truncated"] is True
    assert action.run({"url": f"{http_server.url}/small"}, make_ctx())["body"] == "ok"
    assert http_server.connections == 2


def test_the_guard_still_refuses_a_destination_whose_pool_is_open(allow_loopback, http_server, settings):
    http_server.route("GET", "/", Reply(200, "ok"))
    action.run({"url": f"{http_server.url}/"}, make_ctx())
    settings.POTAFLOW_ALLOW_PRIVATE_DESTINATIONS = []  # 127.0.0.1 is no longer allowed
    with pytest.raises(PermanentError, match="blocked destination"):
        action.run({"url": f"{http_server.url}/"}, make_ctx())
    assert len(http_server.requests) == 1


def test_the_guard_refuses_private_addresses_before_any_pool_is_made(no_exceptions, fake_dns):
    answers, _ = fake_dns
    answers["intranet.example"] = [["10.0.0.7"]]
    for url in ("http://10.1.2.3/", "http://169.254.169.254/latest/meta-data/", "http://intranet.example/"):
        with pytest.raises(PermanentError, match="blocked destination"):
            action.run({"url": url}, make_ctx())
    assert len(pools._pools) == 0


def test_concurrent_calls_share_a_bounded_pool(allow_loopback, http_server):
    http_server.route("GET", "/", Reply(200, "ok", delay=0.05))
    results: list[int] = []

    def call() -> None:
        results.append(action.run({"url": f"{http_server.url}/"}, make_ctx())["status"])

    threads = [threading.Thread(target=call) for _ in range(2 * pools.MAX_CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * len(threads)
    assert len(pools._pools) == 1
    kept = pools._pools[next(iter(pools._pools.keys()))]
    assert kept.pool is not None and kept.pool.qsize() <= pools.MAX_CONNECTIONS
