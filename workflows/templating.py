"""Step config templates: Jinja2, sandboxed, strict, bounded.

Every string in a step's config is a template rendered with the context
``trigger`` (``body``, ``headers``, ``query``, ``method``), ``steps.<key>.output``,
``run`` (``id``, ``started_at``, ``trigger``) and ``workflow`` (``id``, ``name``,
``version``). A string that is exactly one ``{{ expression }}`` keeps the JSON
type of its value (``"{{ trigger.body.count }}"`` -> ``3``, not ``"3"``);
anything else renders to a string.

The environment is an ``ImmutableSandboxedEnvironment`` (user input is code
here: no attribute escapes, no ``append`` or other mutation) with
``StrictUndefined``: a missing variable is an error naming it, never a silent
empty string. One tenant's template must not exhaust a worker shared by all,
so every render of a step's config has a budget (``RenderBudget``): loop
iterations, CPU seconds, and the size of every string it builds (``~``, ``+``,
``*``, ``join``, ``replace``, ``lipsum``, padding widths) and of its result.
Exceeding one raises ``TemplateError`` naming the limit and its setting.
``check_template`` is the save-time check: syntax, names that cannot exist
(an unknown top-level variable, a step key that is not earlier in the
workflow) and limits that are visible statically (``range`` over a literal
bound, ``lipsum`` with a literal count).
"""

import contextlib
import contextvars
import functools
import json
import re
import string
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeGuard, cast

from django.conf import settings
from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

from integrations.base import Action
from integrations.template_syntax import is_template, single_expression

CONTEXT_NAMES = ("trigger", "steps", "run", "workflow")
# ``"x" * n`` and ``a ** b`` build their result before anything else can look at
# it: bound them so a template cannot exhaust the worker's memory or CPU.
MAX_REPEAT_ITEMS = 1_000_000  # characters of a repeated string, items of a repeated list
MAX_POWER_BITS = 100_000  # ~30,000 decimal digits
# Widths and precisions in "%10s" % x, "{:>10}".format(x) and the center /
# indent / wordwrap / format filters allocate their padding up front too.
MAX_WIDTH = 10_000
MAX_LIPSUM_PARAGRAPHS = 20
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class TemplateError(Exception):
    """A template cannot be parsed or rendered; ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TemplateLimitExceeded(SecurityError):
    """A render went over one of its budget's limits (named in the message)."""


# -- the render budget ---------------------------------------------------------
@dataclass
class RenderBudget:
    """What one render of a step's config may spend (all its strings together)."""

    max_iterations: int
    max_string_chars: int
    cpu_seconds: float
    iterations: int = 0
    cpu_deadline: float = 0.0

    @classmethod
    def from_settings(cls) -> "RenderBudget":
        return cls(
            max_iterations=settings.POTAFLOW_TEMPLATE_MAX_ITERATIONS,
            max_string_chars=settings.POTAFLOW_TEMPLATE_MAX_CHARS,
            cpu_seconds=settings.POTAFLOW_TEMPLATE_CPU_SECONDS,
        )

    def start(self) -> None:
        self.cpu_deadline = time.process_time() + self.cpu_seconds

    def tick(self, count: int = 1) -> None:
        self.iterations += count
        if self.iterations > self.max_iterations:
            raise TemplateLimitExceeded(
                f"more than {self.max_iterations:,} loop iterations in one render (POTAFLOW_TEMPLATE_MAX_ITERATIONS)"
            )
        if self.iterations % 64 == 0:
            self.check_cpu()

    def check_cpu(self) -> None:
        if time.process_time() > self.cpu_deadline:
            raise TemplateLimitExceeded(
                f"rendering used more than {self.cpu_seconds:g} s of CPU (POTAFLOW_TEMPLATE_CPU_SECONDS)"
            )

    def check_size(self, size: int, what: str) -> None:
        if size > self.max_string_chars:
            raise TemplateLimitExceeded(
                f"{what} would be longer than {self.max_string_chars:,} characters (POTAFLOW_TEMPLATE_MAX_CHARS)"
            )


_budget: contextvars.ContextVar[RenderBudget | None] = contextvars.ContextVar("potaflow_render_budget", default=None)


def _current_budget() -> RenderBudget:
    """The budget of the render in progress (a fresh one for a render outside ``_budget_scope``)."""
    budget = _budget.get()
    if budget is None:
        budget = RenderBudget.from_settings()
        budget.start()
    return budget


@contextlib.contextmanager
def _budget_scope() -> Iterator[RenderBudget]:
    """One budget for everything rendered inside (joins the enclosing render's budget if any)."""
    budget = _budget.get()
    if budget is not None:
        yield budget
        return
    budget = RenderBudget.from_settings()
    budget.start()
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple) else 0


# ``{% for x in items %}`` is compiled as ``{% for x in items|_potaflow_counted %}``.
_COUNTED_ITER_FILTER = "_potaflow_counted"


class _BoundedCodeGenerator(CodeGenerator):
    """Routes ``~`` through the environment, which bounds its result, and comparisons through
    ``compare``, which compares a form field's text with a number (see ``_compare``)."""

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        self.write("environment.compare(")
        self.visit(node.expr, frame)
        self.write(", (")
        for operand in node.ops:
            self.write(f"{operand.op!r}, ")
            self.visit(operand.expr, frame)
            self.write(", ")
        self.write("))")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _fromjson(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"fromjson: not valid JSON ({exc})") from None


class _JSONSandbox(ImmutableSandboxedEnvironment):
    """Data is JSON: ``body.items`` means the key "items", not ``dict.items``.

    ``+``, ``*``, ``**`` and ``%`` go through ``call_binop``, ``~`` through
    ``bounded_concat``, loops through ``bounded_iter`` and every call through
    ``call``: each checks the current render's budget.
    """

    intercepted_binops = frozenset(["+", "*", "**", "%"])
    code_generator_class = _BoundedCodeGenerator

    def _generate(self, source: Any, *args: Any, **kwargs: Any) -> str:
        if isinstance(source, nodes.Node):
            for loop in source.find_all(nodes.For):
                counted = isinstance(loop.iter, nodes.Filter) and loop.iter.name == _COUNTED_ITER_FILTER
                if not counted:
                    loop.iter = nodes.Filter(
                        loop.iter, _COUNTED_ITER_FILTER, [], [], None, None, lineno=loop.iter.lineno
                    )
        return super()._generate(source, *args, **kwargs)

    def bounded_iter(self, iterable: Any) -> Iterator[Any]:
        budget = _current_budget()
        for item in iterable:
            budget.tick()
            yield item

    def bounded_concat(self, parts: tuple) -> str:
        budget = _current_budget()
        texts = [str(part) for part in parts]
        budget.check_size(sum(len(t) for t in texts), "the result of ~")
        budget.check_cpu()
        return "".join(texts)

    def compare(self, left: Any, operations: tuple) -> bool:
        """``a < b < c`` as Python chains it, each step through ``_compare``."""
        for index in range(0, len(operations), 2):
            operator, right = operations[index], operations[index + 1]
            if not _compare(operator, left, right):
                return False
            left = right
        return True

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        _current_budget().check_cpu()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _current_budget()
        budget.check_cpu()
        if operator == "+" and isinstance(left, str | list | tuple):
            budget.check_size(_size(left) + _size(right), "the result of +")
        elif operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
            if _is_int(left) and _is_int(right):
                _check_bits(abs(left).bit_length() + abs(right).bit_length(), "*")
        elif operator == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
            _check_bits(abs(left).bit_length() * right, "**")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
        result = super().call_binop(context, operator, left, right)
        if operator in ("*", "%"):
            budget.check_size(_size(result), f"the result of {operator}")
        return result

    def wrap_str_format(self, value: Any) -> Any:
        # str.format / str.format_map reached from a template: check the format string first.
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_brace_format(value.__self__)
        return wrapped


# -- comparisons: webhook data is often text ------------------------------------------
_SYMBOLS = {"eq": "==", "ne": "!=", "gt": ">", "gteq": ">=", "lt": "<", "lteq": "<=", "in": "in", "notin": "not in"}
_PYTHON_OPERATORS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "gteq": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lteq": lambda a, b: a <= b,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}
_ORDERING = {
    "gt": lambda a, b: a > b,
    "gteq": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lteq": lambda a, b: a <= b,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_number(text: str) -> int | float | None:
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def _numbers(a: Any, b: Any) -> tuple[Any, Any]:
    """A number and a numeric text compare as numbers: a form field or query value is always text."""
    if _is_number(a) and isinstance(b, str) and _as_number(b) is not None:
        return a, _as_number(b)
    if _is_number(b) and isinstance(a, str) and _as_number(a) is not None:
        return _as_number(a), b
    return a, b


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    kind = {str: "text", bool: "true/false", dict: "an object", list: "a list"}.get(type(value), "the number")
    shown = json.dumps(value, default=str)
    return f"{kind} {shown[:40]}{'…' if len(shown) > 40 else ''}"


def _equal(a: Any, b: Any) -> bool:
    a, b = _numbers(a, b)
    return bool(a == b)


def _compare(operator: str, a: Any, b: Any) -> bool:
    """One comparison of a condition, never a Python ``TypeError``.

    ``"150" > 100`` compares 150 with 100 (form-encoded bodies and query strings are
    text); ``x in text`` looks for ``x``'s text; ``x in nothing`` is false. A comparison
    that means nothing (text that is not a number against a number, with ``>``) is a
    ``TemplateError`` naming both values.
    """
    if isinstance(a, Undefined) or isinstance(b, Undefined):
        # A missing value: the undefined rule decides (the Undefined class's own operators), not this one.
        return bool(_PYTHON_OPERATORS[operator](a, b))
    if operator == "eq":
        return _equal(a, b)
    if operator == "ne":
        return not _equal(a, b)
    if operator in ("in", "notin"):
        if b is None:
            found = False
        elif isinstance(b, str):
            found = (a if isinstance(a, str) else json.dumps(a) if isinstance(a, dict | list) else str(a)) in b
        elif isinstance(b, list | tuple):
            found = any(_equal(a, item) for item in b)
        elif isinstance(b, dict):
            found = a in b
        else:
            raise TemplateError(
                f"cannot look for {_describe(a)} in {_describe(b)} (in works on text, lists and objects)"
            )
        return found if operator == "in" else not found
    a, b = _numbers(a, b)
    try:
        return bool(_ORDERING[operator](a, b))
    except TypeError:
        raise TemplateError(f"cannot compare {_describe(a)} with {_describe(b)} using {_SYMBOLS[operator]}") from None


# -- tests for conditions (the condition builder's operators) --------------------------
MAX_PATTERN_CHARS = 1000


def _test_empty(value: Any) -> bool:
    """Nothing, blank text, an empty list or object (a missing value: see the undefined rule)."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, list | dict | tuple):
        return len(value) == 0
    return False


@functools.lru_cache(maxsize=256)
def _pattern(pattern: str) -> Any:
    # Deferred: the RE2 bindings load only in processes that evaluate "matching".
    import re2

    try:
        return re2.compile(pattern)
    except re2.error as exc:
        raise TemplateError(f"matching: the pattern {pattern!r} is not a valid regular expression ({exc})") from None


def _test_matching(value: Any, pattern: Any) -> bool:
    """``x is matching("^INV-[0-9]+$")``: a regular expression found in the text (RE2: linear time, no ReDoS)."""
    if not isinstance(pattern, str):
        raise TemplateError("matching: the pattern must be text")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise TemplateError(f"matching: patterns are at most {MAX_PATTERN_CHARS} characters")
    if value is None or isinstance(value, dict | list):
        return False
    text = value if isinstance(value, str) else str(value)
    _current_budget().check_size(len(text), "the text given to matching")
    return _pattern(pattern).search(text) is not None


def _test_startingwith(value: Any, prefix: Any) -> bool:
    return isinstance(value, str | int | float) and str(value).startswith(str(prefix))


def _test_endingwith(value: Any, suffix: Any) -> bool:
    return isinstance(value, str | int | float) and str(value).endswith(str(suffix))


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_repeat(sequence: Any, times: Any) -> None:
    if isinstance(sequence, str | list | tuple) and _is_int(times):
        if len(sequence) * times > MAX_REPEAT_ITEMS:
            raise SecurityError(f"the result of * would have more than {MAX_REPEAT_ITEMS:,} items")
        _current_budget().check_size(len(sequence) * times, "the result of *")


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
_unbounded_join = _env.filters["join"]
_unbounded_replace = _env.filters["replace"]


def _join_filter(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    items = list(value) if not isinstance(value, str) else list(value)
    _current_budget().check_size(sum(len(str(i)) for i in items) + len(d) * max(len(items) - 1, 0), "join")
    return _unbounded_join(eval_ctx, items, d, attribute)


_join_filter.jinja_pass_arg = _unbounded_join.jinja_pass_arg  # type: ignore[attr-defined]


def _replace_filter(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    text, old_text, new_text = str(s), str(old), str(new)
    hits = (len(text) + 1) if old_text == "" else text.count(old_text)
    if count is not None and count >= 0:
        hits = min(hits, count)
    _current_budget().check_size(len(text) + hits * (len(new_text) - len(old_text)), "replace")
    return _unbounded_replace(eval_ctx, s, old, new, count)


_replace_filter.jinja_pass_arg = _unbounded_replace.jinja_pass_arg  # type: ignore[attr-defined]


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
    if not _is_int(n) or n > MAX_LIPSUM_PARAGRAPHS or not _is_int(max) or max > 1000:
        raise TemplateLimitExceeded(f"lipsum: at most {MAX_LIPSUM_PARAGRAPHS} paragraphs of at most 1000 words")
    text = generate_lorem_ipsum(n=n, html=html, min=min, max=max)
    _current_budget().check_size(len(text), "lipsum")
    return text


_env.tests["empty"] = _test_empty
_env.tests["matching"] = _test_matching
_env.tests["startingwith"] = _test_startingwith
_env.tests["endingwith"] = _test_endingwith
_env.filters[_COUNTED_ITER_FILTER] = _env.bounded_iter
_env.filters["join"] = _join_filter
_env.filters["replace"] = _replace_filter
_env.globals["lipsum"] = _lipsum


# -- rendering ---------------------------------------------------------------
def render_value(value: Any, context: dict[str, Any], *, path: str = "config") -> Any:
    """Render every string inside ``value`` (dicts and lists recursively; keys are not templated).

    The whole value shares one ``RenderBudget`` from the settings.
    """
    with _budget_scope():
        return _render(value, context, path)


def _render(value: Any, context: dict[str, Any], path: str) -> Any:
    if isinstance(value, str):
        return render_string(value, context, path=path)
    if isinstance(value, dict):
        return {k: _render(v, context, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


@functools.lru_cache(maxsize=2048)
def _compiled_expression(expr: str) -> Any:
    return _env.compile_expression(expr, undefined_to_none=False)


@functools.lru_cache(maxsize=2048)
def _compiled_template(template: str) -> Any:
    return _env.from_string(template)


def render_string(template: str, context: dict[str, Any], *, path: str = "config") -> Any:
    if not is_template(template):
        return template
    expr = single_expression(template)
    try:
        with _budget_scope() as budget:
            return _render_template(template, expr, context, budget)
    except UndefinedError as exc:
        raise TemplateError(f"{path}: undefined variable in {template.strip()!r}: {exc.message}") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{path}: template syntax error: {exc.message}") from None
    except TemplateLimitExceeded as exc:
        raise TemplateError(f"{path}: template limit exceeded: {exc}") from None
    except SecurityError as exc:
        raise TemplateError(f"{path}: not allowed in a template: {exc}") from None
    except TemplateError as exc:
        raise TemplateError(f"{path}: {exc.message}") from None
    except MemoryError:
        raise TemplateError(f"{path}: rendering ran out of memory (the worker's memory limit)") from None
    except RecursionError:
        raise TemplateError(f"{path}: rendering recursed too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any evaluation error is the template's fault
        raise TemplateError(f"{path}: error evaluating {template.strip()!r}: {type(exc).__name__}: {exc}") from None


def _render_template(template: str, expr: str | None, context: dict[str, Any], budget: RenderBudget) -> Any:
    if expr is not None:
        result = _to_json(_compiled_expression(expr)(**context))
        if isinstance(result, str):
            budget.check_size(len(result), "the rendered value")
        return result
    parts: list[str] = []
    total = 0
    for chunk in _compiled_template(template).generate(**context):
        total += len(chunk)
        budget.check_size(total, "the rendered text")
        parts.append(chunk)
    return "".join(parts)


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
    _check_static_limits(ast)
    earlier = list(earlier_steps)
    for key in _referenced_step_keys(ast):
        if key not in earlier:
            known = ", ".join(earlier) if earlier else "none"
            raise TemplateError(
                f"references step {key!r}, which is not an earlier step of this workflow (earlier: {known})"
            )


def _referenced_step_keys(ast: nodes.Template) -> list[str]:
    keys: list[str] = []
    for found in ast.find_all((nodes.Getattr, nodes.Getitem)):
        # find_all's type is the common base (Expr); the nodes found are of the two types asked for.
        node = cast("nodes.Getattr | nodes.Getitem", found)
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name == "steps"):
            continue
        if isinstance(node, nodes.Getattr):
            keys.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            keys.append(node.arg.value)
    return keys


def _check_static_limits(ast: nodes.Template) -> None:
    """Refuse at save time what would certainly exceed a render limit (literal arguments only)."""
    limit = settings.POTAFLOW_TEMPLATE_MAX_ITERATIONS
    for call in ast.find_all(nodes.Call):
        if not isinstance(call.node, nodes.Name):
            continue
        literals = [arg.value for arg in call.args if isinstance(arg, nodes.Const)]
        keywords = {kw.key: kw.value.value for kw in call.kwargs if isinstance(kw.value, nodes.Const)}
        if call.node.name == "range" and literals and all(_is_int(v) for v in literals):
            start, stop, step = (0, literals[0], 1) if len(literals) == 1 else (*literals[:2], 1)
            if len(literals) >= 3:
                step = literals[2] or 1
            if len(range(start, stop, step)) > limit:
                raise TemplateError(
                    f"range() with {len(range(start, stop, step)):,} items exceeds the limit of {limit:,} "
                    "loop iterations per render (POTAFLOW_TEMPLATE_MAX_ITERATIONS)"
                )
        if call.node.name == "lipsum":
            n = keywords.get("n", literals[0] if literals else None)
            if _is_int(n) and n > MAX_LIPSUM_PARAGRAPHS:
                raise TemplateError(f"lipsum: at most {MAX_LIPSUM_PARAGRAPHS} paragraphs (got {n:,})")


def prepare_config(action: Action, config: dict[str, Any]) -> dict[str, Any]:
    """Read bare expressions in an action's ``expression_fields`` as ``{{ ... }}``."""
    fields = action.expression_fields
    if not fields:
        return config
    prepared = dict(config)
    for field in fields:
        value = prepared.get(field)
        if isinstance(value, str) and value.strip() and not is_template(value):
            prepared[field] = "{{ " + value.strip() + " }}"
    return prepared
