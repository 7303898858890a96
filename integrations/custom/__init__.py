"""``custom``: call a Python handler registered in code with ``@handler(name)`` (see ``handlers``)."""

from .action import Custom

ACTIONS = (Custom,)
CREDENTIAL_KINDS = ()
