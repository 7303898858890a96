"""Step config templates: Jinja2, sandboxed, strict.

Every string in a step's config is a template rendered with the context
``trigger`` (``body``, ``headers``, ``query``, ``method``), ``steps.<key>.output``,
``run`` (``id``, ``started_at``, ``trigger``) and ``workflow`` (``id``, ``name``,
``version``). A string that is exactly one ``{{ expression }}`` keeps the JSON
type of its value (``"{{ trigger.body.count }}"`` -> ``3``, not ``"3"``);
anything else renders to a string.

The environment is a ``SandboxedEnvironment`` (user input is code here) with
``StrictUndefined``: a missing variable is an error naming it, never a silent
empty string. ``check_template`` is the save-time check: syntax, and names
that cannot exist (an unknown top-level variable, a step key that is not
earlier in the workflow).
"""

import json
import re
import string
from collections.abc import Iterable
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

CONTEXT_NAMES = ("trigger", "steps", "run", "workflow")
# ``"x" * n`` and ``a ** b`` build their result before anything else can look at
# it: bound them so a template cannot exhaust the worker's memory or CPU.
MAX_REPEAT_ITEMS = 1_000_000  # characters of a repeated string, items of a repeated list
MAX_POWER_BITS = 100_000  # ~30,000 decimal digits
# Widths and precisions in "%10s" % x, "{:>10}".format(x) and the center /
# indent / wordwrap / format filters allocate their padding up front too.
MAX_WIDTH = 10_000
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class TemplateError(Exception):
    """A template cannot be parsed or rendered; ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _fromjson(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"fromjson: not valid JSON ({exc})") from None


class _JSONSandbox(SandboxedEnvironment):
    """Data is JSON: ``body.items`` means the key "items", not ``dict.items``.

    ``*`` and ``**`` go through ``call_binop`` so their result size is bounded.
    """

    intercepted_binops = frozenset(["*", "**", "%"])

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
            if _is_int(left) and _is_int(right):
                _check_bits(abs(left).bit_length() + abs(right).bit_length(), "*")
        elif operator == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
            _check_bits(abs(left).bit_length() * right, "**")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        # str.format / str.format_map reached from a template: check the format string first.
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_brace_format(value.__self__)
        return wrapped


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_repeat(sequence: Any, times: Any) -> None:
    if isinstance(sequence, str | list | tuple) and _is_int(times) and len(sequence) * times > MAX_REPEAT_ITEMS:
        raise SecurityError(f"the result of * would have more than {MAX_REPEAT_ITEMS:,} items")


def _check_width(width: Any, what: str) -> None:
    if width == "*" or (isinstance(width, str) and width.isdigit() and int(width) > MAX_WIDTH):
        raise SecurityError(f"{what}: widths above {MAX_WIDTH:,} (or '*') are not allowed")
    if _is_int(width) and width > MAX_WIDTH:
        raise SecurityError(f"{what}: widths above {MAX_WIDTH:,} are not allowed")


def _check_percent_format(fmt: str) -> None:
    for match in _PERCENT_SPEC.finditer(fmt):
        for group in match.groups():
            if group:
                _check_width(group, "% formatting")


def _check_brace_format(fmt: str) -> None:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise SecurityError(f"format: {exc}") from None
    for _literal, _name, spec, _conversion in fields:
        if not spec:
            continue
        if "{" in spec:
            raise SecurityError("format: nested replacement fields in a format spec are not allowed")
        for number in re.findall(r"\d+", spec):
            _check_width(number, "format")


def _bounded(filter_func: Any, what: str, width_arg: str) -> Any:
    """Wrap a Jinja filter whose ``width_arg`` (2nd positional or keyword) sizes its output."""

    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        width = kwargs.get(width_arg, args[0] if args else None)
        if width is not None:
            _check_width(width, what)
        return filter_func(value, *args, **kwargs)

    return bounded


def _check_bits(bits: int, operator: str) -> None:
    if bits > MAX_POWER_BITS:
        raise SecurityError(f"the result of {operator} would have more than {MAX_POWER_BITS:,} bits")


_env = _JSONSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_env.filters["fromjson"] = _fromjson
for _name, _arg in (("center", "width"), ("indent", "width"), ("wordwrap", "width")):
    _env.filters[_name] = _bounded(_env.filters[_name], _name, _arg)
_unbounded_format = _env.filters["format"]


def _format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    if isinstance(value, str):
        _check_percent_format(value)
    return _unbounded_format(value, *args, **kwargs)


_env.filters["format"] = _format_filter


def single_expression(value: str) -> str | None:
    """The expression inside ``"{{ expr }}"`` when the string is only that, else None."""
    match = _SINGLE_EXPRESSION.match(value)
    if not match:
        return None
    expr = match.group("expr")
    if "{{" in expr or "}}" in expr or "{%" in value or "{#" in value:
        return None
    return expr


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


# -- rendering ---------------------------------------------------------------
def render_value(value: Any, context: dict[str, Any], *, path: str = "config") -> Any:
    """Render every string inside ``value`` (dicts and lists recursively; keys are not templated)."""
    if isinstance(value, str):
        return render_string(value, context, path=path)
    if isinstance(value, dict):
        return {k: render_value(v, context, path=f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context, path=f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def render_string(template: str, context: dict[str, Any], *, path: str = "config") -> Any:
    if not is_template(template):
        return template
    expr = single_expression(template)
    try:
        if expr is not None:
            result = _env.compile_expression(expr, undefined_to_none=False)(**context)
            return _to_json(result)
        return _env.from_string(template).render(**context)
    except UndefinedError as exc:
        raise TemplateError(f"{path}: undefined variable in {template.strip()!r}: {exc.message}") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{path}: template syntax error: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateError(f"{path}: not allowed in a template: {exc}") from None
    except TemplateError as exc:
        raise TemplateError(f"{path}: {exc.message}") from None
    except Exception as exc:  # noqa: BLE001 - any evaluation error is the template's fault
        raise TemplateError(f"{path}: error evaluating {template.strip()!r}: {type(exc).__name__}: {exc}") from None


def _to_json(result: Any) -> Any:
    """Make an expression's value plain JSON (raising on undefined parts)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, Undefined):
            str(obj)  # StrictUndefined raises UndefinedError naming the variable
        if isinstance(obj, set | frozenset | tuple):
            return list(obj)
        raise TemplateError(f"the value of type {type(obj).__name__} is not JSON")

    if isinstance(result, Undefined):
        str(result)
    return json.loads(json.dumps(result, default=default))


# -- save-time checks ---------------------------------------------------------
def iter_strings(value: Any, path: str = "config") -> Iterable[tuple[str, str]]:
    """Every (dotted path, string) inside a config value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from iter_strings(v, f"{path}[{i}]")


def check_template(template: str, *, earlier_steps: Iterable[str]) -> None:
    """Raise ``TemplateError`` for a syntax error or a name that cannot exist at run time."""
    if not is_template(template):
        return
    try:
        ast = _env.parse(template)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message} (line {exc.lineno})") from None
    unknown = sorted(meta.find_undeclared_variables(ast) - set(CONTEXT_NAMES))
    if unknown:
        raise TemplateError(f"unknown variable {unknown[0]!r}; available: {', '.join(CONTEXT_NAMES)}")
    earlier = list(earlier_steps)
    for key in _referenced_step_keys(ast):
        if key not in earlier:
            known = ", ".join(earlier) if earlier else "none"
            raise TemplateError(
                f"references step {key!r}, which is not an earlier step of this workflow (earlier: {known})"
            )


def _referenced_step_keys(ast: nodes.Template) -> list[str]:
    keys: list[str] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name == "steps"):
            continue
        if isinstance(node, nodes.Getattr):
            keys.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            keys.append(node.arg.value)
    return keys
