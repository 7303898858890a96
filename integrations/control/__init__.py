"""Flow control steps (issue 19): ``branch``, ``for_each``, ``delay``, ``wait``, ``stop``.

They are registered like every action (the builder's forms, ``GET /api/actions/``,
validation read their config schemas), but the engine executes them itself:
``Action.control`` is True and their ``run`` refuses to be called.
"""

from .action import Branch, Delay, ForEach, Stop, Wait

ACTIONS = (Branch, ForEach, Delay, Wait, Stop)
CREDENTIAL_KINDS = ()
