"""Test-wide fixtures live in ``testing/`` as pytest plugins, one module per concern."""

import pytest

pytest_plugins = [
    "testing.network",  # socket guard (no traffic beyond loopback) + local protocol peers
    "testing.worker",  # a real Celery worker (and beat) subprocess against the test database
    "testing.files",  # the file storage under test (local disk, S3 on a local moto server)
]


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters live in the cache: every test starts with none.

    Nor with the definitions this process remembered: they are keyed by version id, and a
    rolled-back test's ids are used again on SQLite (its sequence rolls back too).
    """
    from django.core.cache import cache

    from workflows.execution.definitions import definitions

    cache.clear()
    definitions.clear()
    yield
