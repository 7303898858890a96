"""Network fixtures for tests (owned by the integrations work)."""
