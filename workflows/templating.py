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
import ctypes
import functools
import itertools
import json
import re
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard, cast

from django.conf import settings
from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
    lexer,
    meta,
    nodes,
)
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


class TemplateLimitExceeded(SecurityError):  # noqa: N818 - reads as a state, part of the API
    """A render went over one of its budget's limits (named in the message)."""


# -- the render budget ---------------------------------------------------------
@dataclass
class RenderBudget:
    """What one render of a step's config may spend (all its strings together)."""

    max_iterations: int
    max_string_chars: int
    cpu_seconds: float
    max_nesting: int = 32
    iterations: int = 0
    cpu_deadline: float = 0.0
    depth: int = 0

    @classmethod
    def from_settings(cls) -> "RenderBudget":
        return cls(
            max_iterations=settings.POTAFLOW_TEMPLATE_MAX_ITERATIONS,
            max_string_chars=settings.POTAFLOW_TEMPLATE_MAX_CHARS,
            cpu_seconds=settings.POTAFLOW_TEMPLATE_CPU_SECONDS,
            max_nesting=settings.POTAFLOW_TEMPLATE_MAX_NESTING,
        )

    def start(self) -> None:
        # The CPU time of this thread: in a threaded process the others' work is not this render's.
        self.cpu_deadline = time.thread_time() + self.cpu_seconds

    def tick(self, count: int = 1) -> None:
        self.iterations += count
        if self.iterations > self.max_iterations:
            raise TemplateLimitExceeded(
                f"more than {self.max_iterations:,} loop iterations in one render (POTAFLOW_TEMPLATE_MAX_ITERATIONS)"
            )
        if self.iterations % 64 == 0:
            self.check_cpu()

    def cpu_message(self) -> str:
        return f"rendering used more than {self.cpu_seconds:g} s of CPU (POTAFLOW_TEMPLATE_CPU_SECONDS)"

    def check_cpu(self) -> None:
        if time.thread_time() > self.cpu_deadline:
            raise TemplateLimitExceeded(self.cpu_message())

    def check_size(self, size: int, what: str) -> None:
        if size > self.max_string_chars:
            raise TemplateLimitExceeded(
                f"{what} would be longer than {self.max_string_chars:,} characters (POTAFLOW_TEMPLATE_MAX_CHARS)"
            )


_budget: contextvars.ContextVar[RenderBudget | None] = contextvars.ContextVar("potaflow_render_budget", default=None)


class CpuBudgetExceeded(TemplateLimitExceeded):
    """Raised inside a render by ``_CpuWatchdog`` (an asynchronous exception: it carries no message)."""


class _CpuWatchdog:
    """Ends a render that spends its CPU budget inside one long call (a filter looping in Python).

    The budget's own checks run between template operations; a single filter
    call (``wordwrap``, ``urlize``, a ``map`` over a long list) could run far
    past it. A daemon thread reads each rendering thread's CPU clock every
    ``INTERVAL`` seconds and, past its deadline, raises ``CpuBudgetExceeded``
    in that thread (``PyThreadState_SetAsyncExc``: delivered at its next
    Python instruction), so a 1 s budget ends a render in about 1 s. Code
    running in C (a sort, a regular expression) is bounded by the size
    limits instead. It costs nothing per operation, unlike a profile hook
    (measured: 4x slower renders).
    """

    INTERVAL = 0.05

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.watched: dict[int, tuple[int, float]] = {}
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.pid = 0

    @contextlib.contextmanager
    def watch(self, budget: RenderBudget) -> Iterator[None]:
        ident = threading.get_ident()
        if ident in self.watched:  # nested: the outer watch ends it
            yield
            return
        clock = time.pthread_getcpuclockid(ident)
        with self.lock:
            self.watched[ident] = (clock, budget.cpu_deadline)
            self._ensure_thread()
        self.wake.set()
        try:
            yield
        finally:
            with self.lock:
                self.watched.pop(ident, None)
                # An exception sent just before the render ended must not fire after it.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)

    def _ensure_thread(self) -> None:
        import os  # noqa: PLC0415 - only here: a pool child forked from a parent that had the thread needs its own

        if self.thread is not None and self.thread.is_alive() and self.pid == os.getpid():
            return
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name="potaflow-template-cpu", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            if not self.watched:
                self.wake.wait()
                self.wake.clear()
                continue
            time.sleep(self.INTERVAL)
            with self.lock:
                for ident, (clock, deadline) in list(self.watched.items()):
                    try:
                        spent = time.clock_gettime(clock)
                    except OSError:  # the thread is gone
                        continue
                    if spent > deadline:
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(ident), ctypes.py_object(CpuBudgetExceeded)
                        )


_watchdog = _CpuWatchdog()


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
        with _watchdog.watch(budget):
            yield budget
    finally:
        _budget.reset(token)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple) else 0


def text_size(value: Any, limit: int, *, indent: int = 0) -> int:
    """Characters ``value`` takes written out (``str``, JSON), counting shared parts each time they appear.

    Stops counting past ``limit``: a list holding itself twice, thirty times
    over, costs as many steps as the limit, not 2**30. ``indent`` adds that
    many characters per nesting level to each item (``tojson(indent=..)``,
    ``pprint``).
    """
    total = 0
    steps = 0
    budget = _budget.get()
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack and total <= limit:
        item, depth = stack.pop()
        steps += 1
        if budget is not None and steps % 4096 == 0:
            budget.check_cpu()
        if isinstance(item, str | bytes):
            total += len(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, Mapping):
            total += 2 + (indent * depth + 1 if indent else 0)
            for key, child in item.items():
                total += 2 + (indent * (depth + 1) + 1 if indent else 0)
                stack.append((key, depth + 1))
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + (indent * depth + 1 if indent else 0)
            for child in item:
                total += 2 + (indent * (depth + 1) + 1 if indent else 0)
                stack.append((child, depth + 1))
        else:
            total += 32  # an object's repr: Undefined, a cycler, a namespace...
    return total


def _check_text(value: Any, what: str, *, indent: int = 0) -> None:
    """Refuse before writing out a structure (or a string) longer than the limit."""
    if isinstance(value, str):
        _current_budget().check_size(len(value), what)
        return
    budget = _current_budget()
    budget.check_size(text_size(value, budget.max_string_chars, indent=indent), what)


# ``{% for x in items %}`` is compiled as ``{% for x in items|_potaflow_counted %}``.
_COUNTED_ITER_FILTER = "_potaflow_counted"


class _BoundedCodeGenerator(CodeGenerator):
    """Routes ``~`` through the environment, which bounds its result, and comparisons through
    ``compare``, which compares a form field's text with a number (see ``_compare``)."""

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:  # noqa: N802 - ast.NodeVisitor's method name
        self.write("environment.compare(")
        self.visit(node.expr, frame)
        self.write(", (")
        for operand in node.ops:
            self.write(f"{operand.op!r}, ")
            self.visit(operand.expr, frame)
            self.write(", ")
        self.write("))")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 - ast.NodeVisitor's method name
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


# str methods a template may call whose argument sizes their result up front.
_WIDTH_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})


class _JSONSandbox(ImmutableSandboxedEnvironment):
    """Data is JSON: ``body.items`` means the key "items", not ``dict.items``.

    ``+``, ``*``, ``**`` and ``%`` go through ``call_binop``, ``~`` through
    ``bounded_concat``, loops through ``bounded_iter``, every call through
    ``call``, every filter through its ``_budgeted`` wrapper and every
    ``{{ output }}`` through ``finalize``: each checks the current render's budget.
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
        total = 0
        for part in parts:
            total += len(part) if isinstance(part, str) else text_size(part, budget.max_string_chars)
            budget.check_size(total, "the result of ~")
        budget.check_cpu()
        return "".join(str(part) for part in parts)

    def compare(self, left: Any, operations: tuple) -> bool:
        """``a < b < c`` as Python chains it, each step through ``_compare``."""
        for index in range(0, len(operations), 2):
            operator, right = operations[index], operations[index + 1]
            if not _compare(operator, left, right):
                return False
            left = right
        return True

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        budget = _current_budget()
        budget.check_cpu()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | bytes):
            _check_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        budget.depth += 1
        try:
            if budget.depth > budget.max_nesting:
                raise TemplateLimitExceeded(
                    f"calls nested more than {budget.max_nesting} deep (POTAFLOW_TEMPLATE_MAX_NESTING)"
                )
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        return _charged(result, getattr(__obj, "__name__", "a call"))

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _current_budget()
        budget.check_cpu()
        if operator == "+" and isinstance(left, str | bytes | list | tuple):
            budget.check_size(_size(left) + _size(right), "the result of +")
        elif operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
            if _is_int(left) and _is_int(right):
                _check_bits(abs(left).bit_length() + abs(right).bit_length(), "*")
        elif operator == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
            _check_bits(abs(left).bit_length() * right, "**")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left, right if isinstance(right, tuple) else (right,), "the result of %")
        result = super().call_binop(context, operator, left, right)
        if operator in ("*", "%"):
            budget.check_size(_size(result), f"the result of {operator}")
        return result

    def wrap_str_format(self, value: Any) -> Any:
        # str.format / str.format_map reached from a template: check the format string and the result's size first.
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def checked(*args: Any, **kwargs: Any) -> Any:
            _check_brace_format(fmt, [*args, *kwargs.values()])
            return wrapped(*args, **kwargs)

        return checked


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
    if isinstance(sequence, str | bytes | list | tuple) and _is_int(times):
        if len(sequence) * times > MAX_REPEAT_ITEMS:
            raise SecurityError(f"the result of * would have more than {MAX_REPEAT_ITEMS:,} items")
        _current_budget().check_size(len(sequence) * times, "the result of *")


def _check_width(width: Any, what: str) -> None:
    if width == "*" or (isinstance(width, str) and width.isdigit() and int(width) > MAX_WIDTH):
        raise SecurityError(f"{what}: widths above {MAX_WIDTH:,} (or '*') are not allowed")
    if _is_int(width) and width > MAX_WIDTH:
        raise SecurityError(f"{what}: widths above {MAX_WIDTH:,} are not allowed")


def _args_size(args: Iterable[Any]) -> int:
    limit = _current_budget().max_string_chars
    return sum(len(a) if isinstance(a, str) else text_size(a, limit) for a in args)


def _check_percent_format(fmt: str, args: Iterable[Any] = (), what: str = "format") -> None:
    padding = 0
    for match in _PERCENT_SPEC.finditer(fmt):
        for group in match.groups():
            if group:
                _check_width(group, "% formatting")
                padding += int(group) if group.isdigit() else 0
    _current_budget().check_size(len(fmt) + padding + _args_size(args), what)


def _check_brace_format(fmt: str, args: Iterable[Any] = ()) -> None:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise SecurityError(f"format: {exc}") from None
    padding = 0
    for _literal, _name, spec, _conversion in fields:
        if not spec:
            continue
        if "{" in spec:
            raise SecurityError("format: nested replacement fields in a format spec are not allowed")
        for number in re.findall(r"\d+", spec):
            _check_width(number, "format")
            padding += int(number)
    _current_budget().check_size(len(fmt) + padding + _args_size(args), "format")


def _check_str_method(owner: str | bytes, name: str, args: tuple, kwargs: dict[str, Any]) -> None:
    """str methods that size their result from their arguments (``"x".ljust(10**9)``)."""
    budget = _current_budget()
    if name in _WIDTH_METHODS:
        for width in [*args[:1], *kwargs.values()]:
            _check_width(width, name)
    elif name == "expandtabs":
        tab = kwargs.get("tabsize", args[0] if args else 8)
        _check_width(tab, name)
        if _is_int(tab):
            count = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            budget.check_size(len(owner) + count * max(tab, 0), name)
    elif name == "join" and args and isinstance(args[0], list | tuple):
        # (An iterator is not consumed here: the call's result is charged instead.)
        items = args[0]
        budget.check_size(sum(_size(i) for i in items) + len(owner) * max(len(items) - 1, 0), "join")
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count"))


def _check_replace(text: Any, old: Any, new: Any, count: Any = None) -> None:
    if not isinstance(text, str | bytes):
        text = str(text)
    old_len, new_len = _size(old) if isinstance(old, str | bytes) else len(str(old)), _size(new)
    if not isinstance(new, str | bytes):
        new_len = len(str(new))
    hits = (len(text) + 1) if old_len == 0 else text.count(old if isinstance(old, type(text)) else type(text)())
    if _is_int(count) and count >= 0:
        hits = min(hits, count)
    _current_budget().check_size(len(text) + hits * (new_len - old_len), "replace")


def _charged(result: Any, what: str) -> Any:
    """A value a filter or call produced, charged to the budget: strings and lists by length, iterators per item."""
    budget = _current_budget()
    if isinstance(result, str | bytes | list | tuple | dict | set | frozenset):
        budget.check_size(len(result), f"the result of {what}")
    elif isinstance(result, Iterator):
        return _counted_output(result, budget, what)
    return result


def _counted_output(items: Iterator[Any], budget: RenderBudget, what: str) -> Iterator[Any]:
    for count, item in enumerate(items, 1):
        if count % 256 == 0:
            budget.check_cpu()
            budget.check_size(count, f"the result of {what}")
        yield item


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


def _finalize(value: Any) -> Any:
    """Every ``{{ output }}`` before it is written out: a structure is measured before ``str()`` builds it."""
    if not isinstance(value, str):
        _check_text(value, "the output of {{ }}")
    return value


class _StrictChainableUndefined(ChainableUndefined, StrictUndefined):
    """Strict (rendering, comparing or iterating it is an error naming the missing name), but
    reading an attribute of it is not: ``steps.x.output | default("")`` works for a step ``x``
    that did not run (on a path not taken), as validation promises (``check_template``)."""

    __slots__ = ()


_env = _JSONSandbox(
    undefined=_StrictChainableUndefined, autoescape=False, keep_trailing_newline=True, finalize=_finalize
)
_env.filters["fromjson"] = _fromjson
for _name, _arg in (("center", "width"), ("indent", "width"), ("wordwrap", "width")):
    _env.filters[_name] = _bounded(_env.filters[_name], _name, _arg)


# -- the condition rule ------------------------------------------------------------------
# In an action's ``condition_fields`` (filter's condition), an undefined value is false, not an
# error: an event without ``amount`` does not pass ``amount >= 100`` and the run ends filtered,
# as n8n and Zapier users expect. What was undefined is noted (``_undefined`` in the rendered
# config) so the step's output can say why. Everywhere else a missing variable stays an error.
_undefined_seen: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("undefined_seen", default=None)


class ConditionTemplate(str):
    """A condition field's template (``prepare_config`` marks it): rendered by the condition rule."""

    __slots__ = ()


class _ConditionUndefined(ChainableUndefined):
    """Undefined in a condition: false, equal to nothing, empty; each use is noted."""

    __slots__ = ()

    def _noted(self) -> None:
        seen = _undefined_seen.get()
        name = self._undefined_name
        message = f"{name!r} is undefined" if isinstance(name, str) else self._undefined_message
        if seen is not None and message not in seen:
            seen.append(message)

    def __bool__(self) -> bool:
        self._noted()
        return False

    def __str__(self) -> str:
        self._noted()
        return ""

    def __iter__(self) -> Iterator[Any]:
        self._noted()
        return iter(())

    def __len__(self) -> int:
        self._noted()
        return 0

    def __eq__(self, other: object) -> bool:
        self._noted()
        return False

    def __ne__(self, other: object) -> bool:
        self._noted()
        return True

    def __hash__(self) -> int:
        return id(self)

    def _false(self, *_args: Any, **_kwargs: Any) -> bool:
        self._noted()
        return False

    __lt__ = __le__ = __gt__ = __ge__ = __contains__ = _false  # type: ignore[assignment]

    def _same(self, *_args: Any, **_kwargs: Any) -> "_ConditionUndefined":
        self._noted()
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same  # type: ignore[assignment]
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _same  # type: ignore[assignment]
    __neg__ = __pos__ = __call__ = __getitem__ = _same  # type: ignore[assignment]


_condition_env = _env.overlay(undefined=_ConditionUndefined)


# -- what each filter may build ---------------------------------------------------------
# Every filter of the sandbox is listed here with what bounds it (a test fails for a filter
# missing from this list). Whatever the entry, each filter call checks the CPU budget first
# and its result is charged after: a string or a list by its length, an iterator per item
# produced. An entry with a check also refuses *before* building: ``PRECHECKS`` below.
FILTER_BUDGETS: dict[str, str] = {
    "_potaflow_counted": "loop iterations (POTAFLOW_TEMPLATE_MAX_ITERATIONS)",
    "abs": "a number",
    "attr": "an existing value",
    "batch": "size of a batch (filled up to it) at most the size limit",
    "capitalize": "length of the input (Unicode case may triple a character: charged after)",
    "center": f"width at most {MAX_WIDTH:,}",
    "count": "a number",
    "d": "an existing value",
    "default": "an existing value",
    "dictsort": "items of the input",
    "e": "exact escaped length counted before escaping",
    "escape": "exact escaped length counted before escaping",
    "filesizeformat": "a short string",
    "first": "an existing value",
    "float": "a number",
    "forceescape": "exact escaped length counted before escaping",
    "format": "format string + widths + arguments' written size, before formatting",
    "fromjson": "at most the input's length in items",
    "groupby": "items of the input",
    "indent": "input + indentation x lines, before indenting",
    "int": "a number (Python caps digits at 4,300)",
    "items": "items of the input",
    "join": "written size of the items + separators, before joining",
    "last": "an existing value",
    "length": "a number",
    "list": "items of the input",
    "lower": "length of the input (charged after)",
    "map": "items of the input, per item",
    "max": "an existing value",
    "min": "an existing value",
    "pprint": "written size of the value (with its indentation), before formatting",
    "random": "an existing value",
    "reject": "items of the input, per item",
    "rejectattr": "items of the input, per item",
    "replace": "exact length counted before replacing",
    "reverse": "items of the input",
    "round": "a number",
    "safe": "the input",
    "select": "items of the input, per item",
    "selectattr": "items of the input, per item",
    "slice": f"at most {MAX_WIDTH:,} slices",
    "sort": "items of the input",
    "string": "written size of the value, before str()",
    "striptags": "at most the input",
    "sum": "written size of the items when they are sequences, before adding; lists joined in linear time",
    "title": "length of the input (charged after)",
    "tojson": f"written size of the value (x6 at most when escaped; indent at most {MAX_WIDTH:,}), before dumping",
    "trim": "at most the input",
    "truncate": "at most the input (Jinja requires end to fit in length)",
    "unique": "items of the input, per item",
    "upper": "length of the input (charged after)",
    "urlencode": "written size of the value, before encoding (x12 at most: charged after)",
    "urlize": "2 x input + one link's markup per word, before linking",
    "wordcount": "a number",
    "wordwrap": f"input + wrapstring x lines, before wrapping; width at most {MAX_WIDTH:,}",
    "xmlattr": "written size of the value, before (x6 at most when escaped: charged after)",
}

_ESCAPES = (("&", 4), ("<", 3), (">", 3), ('"', 4), ("'", 4))


def _pre_escape(value: Any, *_args: Any, **_kwargs: Any) -> None:
    if isinstance(value, str):
        if hasattr(value, "__html__"):
            _current_budget().check_size(len(value), "escape")  # Markup: escape leaves it as it is
            return
        grown = sum(value.count(char) * extra for char, extra in _ESCAPES)
        _current_budget().check_size(len(value) + grown, "escape")
    else:
        _check_text(value, "escape", indent=0)
        budget = _current_budget()
        budget.check_size(text_size(value, budget.max_string_chars) * 5, "escape")


def _pre_force_escape(value: Any, *_args: Any, **_kwargs: Any) -> None:
    text = str(value) if isinstance(value, str) else None
    if text is None:
        _pre_escape(value)
        return
    grown = sum(text.count(char) * extra for char, extra in _ESCAPES)
    _current_budget().check_size(len(text) + grown, "forceescape")


def _pre_format(value: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(value, str):
        _check_percent_format(value, [*args, *kwargs.values()], "format")


def _pre_indent(value: Any, width: Any = 4, *_args: Any, **kwargs: Any) -> None:
    width = kwargs.get("width", width)
    _check_width(width, "indent")
    text = value if isinstance(value, str) else str(value)
    per_line = len(width) if isinstance(width, str) else (width if _is_int(width) else 0)
    _current_budget().check_size(len(text) + per_line * (text.count("\n") + 1), "indent")


def _pre_wordwrap(value: Any, width: Any = 79, *args: Any, **kwargs: Any) -> None:
    width = kwargs.get("width", width)
    _check_width(width, "wordwrap")
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None)
    text = value if isinstance(value, str) else str(value)
    lines = len(text) // max(width if _is_int(width) else 1, 1) + text.count("\n") + 1
    _current_budget().check_size(len(text) + lines * len(str(wrapstring or "\n")), "wordwrap")


def _pre_written(what: str) -> Callable[..., None]:
    def check(value: Any, *_args: Any, **_kwargs: Any) -> None:
        _check_text(value, what)

    return check


def _pre_tojson(value: Any, indent: Any = None, *_args: Any, **kwargs: Any) -> None:
    indent = kwargs.get("indent", indent)
    if indent is not None:
        _check_width(indent, "tojson")
    _check_text(value, "tojson", indent=indent if _is_int(indent) else 0)


def _pre_pprint(value: Any, *_args: Any, **_kwargs: Any) -> None:
    _check_text(value, "pprint", indent=1)


def _pre_urlize(value: Any, *args: Any, **kwargs: Any) -> None:
    text = value if isinstance(value, str) else str(value)
    extra = sum(len(str(v)) for v in [*args, *kwargs.values()] if isinstance(v, str))
    words = sum(text.count(c) for c in " \n\t\r") + 1
    _current_budget().check_size(2 * len(text) + words * (48 + extra), "urlize")


def _pre_batch(value: Any, linecount: Any = 1, fill_with: Any = None, **kwargs: Any) -> None:
    linecount = kwargs.get("linecount", linecount)
    if _is_int(linecount):
        _current_budget().check_size(linecount, "batch")


def _pre_slice(value: Any, slices: Any = 1, *_args: Any, **kwargs: Any) -> None:
    _check_width(kwargs.get("slices", slices), "slice")


def _pre_replace(value: Any, old: Any = "", new: Any = "", count: Any = None, **_kwargs: Any) -> None:
    _check_replace(value, old, new, count)


def _pre_join(value: Any, d: Any = "", *_args: Any, **kwargs: Any) -> None:
    d = kwargs.get("d", d)
    budget = _current_budget()
    items = value if isinstance(value, str | list | tuple) else ()
    size = sum(len(i) if isinstance(i, str) else text_size(i, budget.max_string_chars) for i in items)
    budget.check_size(size + len(str(d)) * max(len(items) - 1, 0), "join")


PRECHECKS: dict[str, Callable[..., None]] = {
    "batch": _pre_batch,
    "e": _pre_escape,
    "escape": _pre_escape,
    "forceescape": _pre_force_escape,
    "format": _pre_format,
    "indent": _pre_indent,
    "join": _pre_join,
    "pprint": _pre_pprint,
    "replace": _pre_replace,
    "slice": _pre_slice,
    "string": _pre_written("string"),
    "tojson": _pre_tojson,
    "urlencode": _pre_written("urlencode"),
    "urlize": _pre_urlize,
    "wordwrap": _pre_wordwrap,
    "xmlattr": _pre_written("xmlattr"),
}


def _sum_filter(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """``sum``: sequences are measured before they are added, and lists joined in one pass (not quadratic)."""
    items = list(iterable)
    if attribute is not None:
        getter = _unbudgeted_sum  # Jinja's own, which applies the attribute
        return getter(environment, items, attribute=attribute, start=start)
    if isinstance(start, list | tuple) and all(isinstance(i, type(start)) for i in items):
        budget = _current_budget()
        budget.check_size(len(start) + sum(len(i) for i in items), "sum")
        return type(start)(itertools.chain(start, *items))
    return _unbudgeted_sum(environment, items, start=start)


_unbudgeted_sum = _env.filters["sum"]
_sum_filter.jinja_pass_arg = _unbudgeted_sum.jinja_pass_arg  # type: ignore[attr-defined]
_env.filters["sum"] = _sum_filter


def _budgeted(name: str, func: Any) -> Any:
    """Every filter: CPU checked first, ``PRECHECKS[name]`` before it runs, its result charged after."""
    precheck = PRECHECKS.get(name)
    passes_context = hasattr(func, "jinja_pass_arg")

    def budgeted(*args: Any, **kwargs: Any) -> Any:
        _current_budget().check_cpu()
        if precheck is not None:
            precheck(*(args[1:] if passes_context else args), **kwargs)
        return _charged(func(*args, **kwargs), name)

    if passes_context:
        budgeted.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    budgeted.potaflow_budgeted = True  # type: ignore[attr-defined]
    return budgeted


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
for _name in list(_env.filters):
    if _name != _COUNTED_ITER_FILTER:
        _env.filters[_name] = _budgeted(_name, _env.filters[_name])
_env.globals["lipsum"] = _lipsum


# -- rendering ---------------------------------------------------------------
def render_value(value: Any, context: dict[str, Any], *, path: str = "config") -> Any:
    """Render every string inside ``value`` (dicts and lists recursively; keys are not templated).

    The whole value shares one ``RenderBudget`` from the settings. A top-level condition field
    (``prepare_config`` marks them) in which something was undefined is named under ``_undefined``.
    """
    try:
        with _budget_scope():
            rendered = _render(value, context, path)
            undefined: dict[str, list[str]] = {}
            rendered = _unwrap_conditions(rendered, "", undefined)
            if isinstance(value, dict) and isinstance(rendered, dict) and undefined:
                rendered["_undefined"] = undefined
            return rendered
    except CpuBudgetExceeded:  # delivered between two strings
        raise TemplateError(f"{path}: template limit exceeded: {RenderBudget.from_settings().cpu_message()}") from None


def _render(value: Any, context: dict[str, Any], path: str) -> Any:
    if isinstance(value, ConditionTemplate):
        return render_condition(value, context, path=path)
    if isinstance(value, str):
        return render_string(value, context, path=path)
    if isinstance(value, dict):
        return {k: _render(v, context, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


@dataclass(frozen=True)
class _RenderedCondition:
    value: Any
    undefined: list[str]


def _unwrap_conditions(value: Any, where: str, undefined: dict[str, list[str]]) -> Any:
    """Rendered conditions (at any depth: a branch's ``paths[0].when``) as their values; what was
    undefined in each, by its place (``condition``, ``paths[0].when``), into ``undefined``."""
    if isinstance(value, _RenderedCondition):
        if value.undefined:
            undefined[where] = value.undefined
        return value.value
    if isinstance(value, dict):
        return {k: _unwrap_conditions(v, f"{where}.{k}" if where else str(k), undefined) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_conditions(v, f"{where}[{i}]", undefined) for i, v in enumerate(value)]
    return value


def render_condition(template: str, context: dict[str, Any], *, path: str = "config") -> Any:
    """A condition field's value by the condition rule (see ``_ConditionUndefined``), with what was undefined."""
    seen: list[str] = []
    token = _undefined_seen.set(seen)
    try:
        value = render_string(template, context, path=path, condition=True)
    finally:
        _undefined_seen.reset(token)
    return _RenderedCondition(value, seen)


@functools.lru_cache(maxsize=2048)
def _compiled_condition(expr: str) -> Any:
    check_source("{{" + expr + "}}")
    return _condition_env.compile_expression(expr, undefined_to_none=False)


@functools.lru_cache(maxsize=2048)
def _compiled_condition_template(template: str) -> Any:
    check_source(template)
    return _condition_env.from_string(template)


@functools.lru_cache(maxsize=2048)
def _compiled_expression(expr: str) -> Any:
    check_source("{{" + expr + "}}")
    return _env.compile_expression(expr, undefined_to_none=False)


@functools.lru_cache(maxsize=2048)
def _compiled_template(template: str) -> Any:
    check_source(template)
    return _env.from_string(template)


def _nesting_error() -> TemplateError:
    limit = settings.POTAFLOW_TEMPLATE_MAX_NESTING
    return TemplateError(f"the template is nested more than {limit} levels deep (POTAFLOW_TEMPLATE_MAX_NESTING)")


def check_source(template: str) -> nodes.Template:
    """Parse ``template`` within the source limits: its size, and how deeply it nests.

    Jinja's parser and compiler recurse once per level of brackets, unary
    operators, filters and blocks: ``(`` x 100 raised ``RecursionError`` (a 500).
    The brackets are counted on the tokens before parsing (at most
    ``POTAFLOW_TEMPLATE_MAX_NESTING``), the tree's depth after it (at most four
    times that: a chain of filters or operators is one level each).
    """
    limit = settings.POTAFLOW_TEMPLATE_MAX_SOURCE_CHARS
    if len(template) > limit:
        raise TemplateError(
            f"the template is {len(template):,} characters long; the limit is {limit:,} "
            "(POTAFLOW_TEMPLATE_MAX_SOURCE_CHARS)"
        )
    max_nesting = settings.POTAFLOW_TEMPLATE_MAX_NESTING
    depth = 0
    try:
        for token in _env.lex(template):
            kind = token[1]
            if kind in (lexer.TOKEN_LPAREN, lexer.TOKEN_LBRACKET, lexer.TOKEN_LBRACE):
                depth += 1
                if depth > max_nesting:
                    raise _nesting_error()
            elif kind in (lexer.TOKEN_RPAREN, lexer.TOKEN_RBRACKET, lexer.TOKEN_RBRACE):
                depth = max(depth - 1, 0)
        ast = _env.parse(template)
    except RecursionError:
        raise _nesting_error() from None
    # The tree's depth, without recursing (the compiler recurses a few frames per level: 4 x the
    # bracket limit stays far from Python's recursion limit, and allows long filter chains).
    stack: list[tuple[nodes.Node, int]] = [(ast, 1)]
    while stack:
        node, level = stack.pop()
        if level > max_nesting * 4:
            raise _nesting_error()
        stack.extend((child, level + 1) for child in node.iter_child_nodes())
    return ast


def render_string(template: str, context: dict[str, Any], *, path: str = "config", condition: bool = False) -> Any:
    if not is_template(template):
        return template
    expr = single_expression(template)
    try:
        with _budget_scope() as budget:
            return _render_template(template, expr, context, budget, condition=condition)
    except UndefinedError as exc:
        raise TemplateError(f"{path}: undefined variable in {template.strip()!r}: {exc.message}") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{path}: template syntax error: {exc.message}") from None
    except CpuBudgetExceeded:
        message = RenderBudget.from_settings().cpu_message()
        raise TemplateError(f"{path}: template limit exceeded: {message}") from None
    except TemplateLimitExceeded as exc:
        raise TemplateError(f"{path}: template limit exceeded: {exc}") from None
    except SecurityError as exc:
        raise TemplateError(f"{path}: not allowed in a template: {exc}") from None
    except TemplateError as exc:
        raise TemplateError(f"{path}: {exc.message}") from None
    except MemoryError:
        raise TemplateError(f"{path}: rendering ran out of memory (the worker's memory limit)") from None
    except RecursionError:
        limit = settings.POTAFLOW_TEMPLATE_MAX_NESTING
        raise TemplateError(
            f"{path}: rendering recursed too deeply (templates nest at most {limit} levels: "
            "POTAFLOW_TEMPLATE_MAX_NESTING)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any evaluation error is the template's fault
        raise TemplateError(f"{path}: error evaluating {template.strip()!r}: {type(exc).__name__}: {exc}") from None


@functools.lru_cache(maxsize=2048)
def _is_lookup(expr: str) -> bool:
    """``expr`` only reads a part of the run's context (``steps.parse.output.rows``, ``trigger.body["a"]``).

    Such a value is built by nothing in the template: it was bounded when it was stored (the
    webhook's and each step's own limits), so the size budget, which is for what a template builds,
    does not charge a structure (a 5 MB CSV's parsed rows pass to the next step whole); a string
    result is still held to the limit. Any filter, call, operator or computed subscript makes it a
    template's work again, measured as ever.
    """
    try:
        (output,) = _env.parse("{{" + expr + "}}").body
    except (TemplateSyntaxError, ValueError):
        return False
    if not isinstance(output, nodes.Output) or len(output.nodes) != 1:
        return False
    node = output.nodes[0]
    while True:
        if isinstance(node, nodes.Getattr) or (isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)):
            node = node.node
        else:
            return isinstance(node, nodes.Name) and node.name in CONTEXT_NAMES


def _render_template(
    template: str, expr: str | None, context: dict[str, Any], budget: RenderBudget, *, condition: bool = False
) -> Any:
    if expr is not None:
        value = (_compiled_condition if condition else _compiled_expression)(expr)(**context)
        if isinstance(value, _ConditionUndefined):
            value._noted()
            return False
        if not _is_lookup(expr):
            _check_text(value, "the rendered value")
        result = _to_json(value)
        if isinstance(result, str):
            budget.check_size(len(result), "the rendered value")
        return result
    parts: list[str] = []
    total = 0
    for chunk in (_compiled_condition_template if condition else _compiled_template)(template).generate(**context):
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


# Web threads of this process checking a template for the builder at once (POTAFLOW_WEB_HEAVY_SLOTS).
check_slots = threading.BoundedSemaphore(settings.POTAFLOW_WEB_HEAVY_SLOTS)


@contextlib.contextmanager
def check_budget() -> Iterator[RenderBudget]:
    """One CPU budget (``POTAFLOW_TEMPLATE_CPU_SECONDS``) for every ``check_template`` inside: a whole definition."""
    with _budget_scope_unwatched() as budget:
        yield budget


@contextlib.contextmanager
def _budget_scope_unwatched() -> Iterator[RenderBudget]:
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


def check_template(
    template: str,
    *,
    earlier_steps: Iterable[str],
    names: Iterable[str] = (),
    other_steps: Iterable[str] = (),
) -> None:
    """Raise ``TemplateError`` for a syntax error or a name that cannot exist at run time.

    ``earlier_steps``: the steps sure to have run before this one on its path; ``names``: the
    variables known here besides ``CONTEXT_NAMES`` (``item`` and ``index`` in a loop body,
    ``failure`` in the error path); ``other_steps``: the definition's other steps, which a
    template may read only through ``default`` (``steps.x.output | default("")``) or
    ``is defined``, as they may not have run.

    Parsing costs CPU in the web process (~10 microseconds a character): it
    runs within the CPU budget of the enclosing ``check_budget`` (or its own),
    watched like a render, so no request checks templates for more than
    ``POTAFLOW_TEMPLATE_CPU_SECONDS``.
    """
    if not is_template(template):
        return
    with _budget_scope_unwatched() as budget:
        message = (
            f"checking the templates used more than {budget.cpu_seconds:g} s of CPU (POTAFLOW_TEMPLATE_CPU_SECONDS)"
        )
        try:
            budget.check_cpu()
            with _watchdog.watch(budget):
                _check_template(template, earlier_steps, names, other_steps)
        except (CpuBudgetExceeded, TemplateLimitExceeded):
            raise TemplateError(message) from None


def _check_template(
    template: str, earlier_steps: Iterable[str], names: Iterable[str] = (), other_steps: Iterable[str] = ()
) -> None:
    try:
        ast = check_source(template)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message} (line {exc.lineno})") from None
    known_names = [*CONTEXT_NAMES, *names]
    unknown = sorted(meta.find_undeclared_variables(ast) - set(known_names))
    if unknown:
        raise TemplateError(f"unknown variable {unknown[0]!r}; available: {', '.join(known_names)}")
    _check_static_limits(ast)
    earlier = list(earlier_steps)
    others = set(other_steps)
    guarded = _guarded_step_keys(ast)
    for key in _referenced_step_keys(ast):
        if key in earlier:
            continue
        if key in others:
            if key in guarded:
                continue
            raise TemplateError(
                f"reads step {key!r}, which is not sure to have run before this step on its path "
                f"(sure to have run: {', '.join(earlier) if earlier else 'none'}); "
                f'read it with a default, e.g. {{{{ steps.{key}.output | default("") }}}}'
            )
        known = ", ".join(earlier) if earlier else "none"
        raise TemplateError(
            f"references step {key!r}, which is not an earlier step of this workflow (earlier: {known})"
        )


# Filters and tests that make reading a step that may not have run safe.
_GUARD_FILTERS = frozenset({"default", "d"})
_GUARD_TESTS = frozenset({"defined", "undefined"})


def _guarded_step_keys(ast: nodes.Template) -> set[str]:
    """Step keys read under ``| default(...)`` or tested with ``is defined``."""
    guarded: set[str] = set()
    for found in ast.find_all((nodes.Filter, nodes.Test)):
        node = cast("nodes.Filter | nodes.Test", found)
        names = _GUARD_FILTERS if isinstance(node, nodes.Filter) else _GUARD_TESTS
        if node.name in names and node.node is not None:
            guarded.update(_referenced_step_keys(node.node))
    return guarded


def _referenced_step_keys(ast: nodes.Node) -> list[str]:
    keys: list[str] = []
    found_nodes = list(ast.find_all((nodes.Getattr, nodes.Getitem)))
    if isinstance(ast, nodes.Getattr | nodes.Getitem):
        found_nodes.append(ast)  # find_all yields the descendants only
    for found in found_nodes:
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


def prepare_config(action: Action, config: Mapping[str, Any], *, whole: bool = False) -> dict[str, Any]:
    """The config as rendered: bare expressions in the action's ``expression_fields`` (and
    ``expression_items``) read as ``{{ ... }}``; condition fields marked for the condition rule
    (an undefined value is false: ``render_condition``).

    A control step's nested step lists are not part of it (``Action.own_config``): each nested
    step renders its own config when it runs, with its own context (``item``...). ``whole=True``
    keeps them (validation checks the whole config against the schema).
    """
    prepared = dict(config) if whole else action.own_config(config)
    conditions = action.condition_fields

    def bracket(value: Any) -> Any:
        if isinstance(value, str) and value.strip() and not is_template(value):
            return "{{ " + value.strip() + " }}"
        return value

    def mark(field: str, value: Any) -> Any:
        if field in conditions and isinstance(value, str) and is_template(value):
            return ConditionTemplate(value)
        return value

    for field in action.expression_fields:
        if field in prepared:
            prepared[field] = bracket(prepared[field])
    for list_field, item_field in action.expression_items:
        items = prepared.get(list_field)
        if isinstance(items, list):
            prepared[list_field] = [
                {**item, item_field: mark(item_field, bracket(item[item_field]))}
                if isinstance(item, dict) and item_field in item
                else item
                for item in items
            ]
    for field in conditions:
        if field in prepared:
            prepared[field] = mark(field, prepared[field])
    return prepared
