"""What counts as a template in a step's config, decided in one place.

The template engine (``workflows.templating``) renders with it, and the
actions use it when they check a config that may still hold templates (a
``{{ expression }}`` gets its real type only at run time).
"""

import re

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


def is_template(value: str) -> bool:
    """Whether ``value`` holds any template syntax (an expression, a statement or a comment)."""
    return "{{" in value or "{%" in value or "{#" in value


def single_expression(value: str) -> str | None:
    """The expression inside ``"{{ expr }}"`` when the string is only that, else None."""
    match = _SINGLE_EXPRESSION.match(value)
    if not match:
        return None
    expr = match.group("expr")
    if "{{" in expr or "}}" in expr or "{%" in value or "{#" in value:
        return None
    return expr
