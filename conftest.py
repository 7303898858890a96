"""Test-wide fixtures live in ``testing/`` as pytest plugins, one module per concern."""

import pytest

pytest_plugins = [
    "testing.network",  # socket guard (no traffic beyond loopback) + local protocol peers
    "testing.worker",  # a real Celery worker (and beat) subprocess against the test database
    "testing.files",  # the file storage under test (local disk, S3 on a local moto server)
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``services`` need PostgreSQL and Redis: on the embedded defaults they are skipped, saying why.

    ``make test`` as a newcomer runs it (no DATABASE_URL, no CELERY_BROKER_URL) passes; CI runs
    it so, then only the marked tests against PostgreSQL and Redis (``.ci/run``).
    """
    from django.conf import settings

    missing = []
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        missing.append("DATABASE_URL=postgres://...")
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        missing.append("CELERY_BROKER_URL=redis://...")
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"needs PostgreSQL and Redis: set {' and '.join(missing)} (CI's second leg)")
    for item in items:
        if item.get_closest_marker("services") is not None:
            item.add_marker(skip)


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
