"""Deployment checks for the auth setup."""

from typing import Any

from django.conf import settings
from django.core.checks import Warning, register  # noqa: A004 - django.core.checks' name


@register("security", deploy=True)
def check_shared_cache(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Throttle counters in a process-local cache multiply every limit by the number of web processes."""
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if backend.endswith(("locmem.LocMemCache", "dummy.DummyCache")):
        return [
            Warning(
                f"The default cache ({backend}) is not shared between processes, so every web process "
                "counts login and API throttles on its own.",
                hint="Set CACHE_URL to a shared cache, e.g. redis://host:6379/2, or leave it unset "
                "for the file-based cache under POTAFLOW_VAR_DIR.",
                id="accounts.W001",
            )
        ]
    return []
