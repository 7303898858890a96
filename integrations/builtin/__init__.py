"""The control steps every workflow engine needs: ``transform`` (build a value) and ``filter`` (stop the run)."""

from .filter import Filter
from .transform import Transform

ACTIONS = (Transform, Filter)
CREDENTIAL_KINDS = ()
