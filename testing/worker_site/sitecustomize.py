"""Imported by Python at start-up in test subprocesses whose PYTHONPATH starts here.

It installs the test socket guard in the Celery worker before any task code
runs (``POTAFLOW_HANDLER_MODULES`` would be too late: handler modules are
imported lazily, on the first ``custom`` step). Never on a production path.
"""

from testing.socket_guard import install_from_environment

install_from_environment()
