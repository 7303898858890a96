"""Real Celery worker fixtures for tests (owned by the engine work)."""
