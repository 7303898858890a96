"""``celery worker``'s class for PotaFlow: Celery's, with the pool sized by ``potaflow.worker_pool``.

Imported only when a worker starts (``potaflow.celery.PotaFlowCelery.Worker``): web and beat do not
load Celery's worker machinery.
"""

from typing import Any

from celery.apps.worker import Worker as CeleryWorker
from django.conf import settings

from .worker_pool import autoscale_bounds


class Worker(CeleryWorker):
    """The autoscaler on unless the command line says ``--autoscale``: see ``potaflow.worker_pool``."""

    def prepare_args(self, **kwargs: Any) -> Any:
        concurrency = getattr(self, "concurrency", None)  # set from -c or the settings by setup_defaults
        given = kwargs.get("autoscale")
        if given:  # "max,min" on the command line
            concurrency = int(str(given).split(",", 1)[0]) if isinstance(given, str) else int(given[0])
        elif isinstance(concurrency, int):  # not ``-c auto``
            bounds = autoscale_bounds(concurrency, int(settings.POTAFLOW_WORKER_MIN_CONCURRENCY))
            if bounds is not None:
                kwargs["autoscale"] = list(bounds)
        if isinstance(concurrency, int):
            # The most steps this worker runs at once, for the rules that share them (policy.worker_slots):
            # the command line wins over the setting, and the pool's processes inherit the configuration.
            self.app.conf.worker_concurrency = concurrency
        return super().prepare_args(**kwargs)
