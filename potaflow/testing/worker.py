"""Real Celery worker fixtures for tests (owned by the engine work)."""

# A fixed Fernet key shared by the test process and the worker subprocess.
TEST_FERNET_KEY = "dGVzdC1rZXktZm9yLXBvdGFmbG93LXRlc3RzLW9ubHk="
