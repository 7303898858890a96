"""Values a database can store, in one place: input is refused, output is made storable.

PostgreSQL's ``jsonb`` refuses ``NaN``/``Infinity`` (they are not JSON) and the
NUL character ``\\u0000`` (refused in ``text`` columns too), psycopg cannot
encode a lone surrogate (``"\\ud800"``), while Python's ``json`` yields all of
them; a deeply nested document makes its parser raise ``RecursionError``.
Unchecked, each is a 500 after part of the work was done.

- Input (webhook bodies, run payloads, step configs) is *refused*: ``loads``
  parses JSON strictly and ``problem``/``ensure`` name the first value that
  cannot be stored, so the caller answers a 400 naming it.
- Output that echoes a server's data (action outputs, error messages) is
  *made* storable with ``storable``/``clean_text``: NUL and lone surrogates
  become U+FFFD, NaN/Infinity their JSON spelling as strings.
"""

import json
import math
import re
from collections.abc import Mapping
from typing import Any, TypeAlias, overload

# A value a JSON column holds (what ``storable`` returns; an action's output is one).
JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None

# -- input: refused -----------------------------------------------------------
# Far deeper than any real webhook; well below Python's recursion limit, so
# rendering templates and encoding JSON never hit it either.
MAX_DEPTH = 100
NUL = "\x00"


class NotStorable(ValueError):  # noqa: N818 - reads as a state, part of the API
    """``path`` (e.g. ``trigger.body.items[2]``) holds a value the database refuses."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(text: str | bytes) -> Any:
    """``json.loads`` that refuses NaN/Infinity and absurd nesting with ``ValueError``.

    ``json.JSONDecodeError`` (a ``ValueError``) still carries the position of a
    syntax error; the other ``ValueError`` messages say what is wrong.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("the document is nested too deeply") from None


def problem(value: Any, path: str = "") -> tuple[str, str] | None:
    """The first ``(path, reason)`` inside ``value`` that cannot be stored, else None."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            return where, f"is nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str):
            if NUL in item:
                return where, "contains a NUL character (\\u0000), which cannot be stored"
            if not _encodable(item):
                return where, "contains a lone UTF-16 surrogate (e.g. \\ud800), which is not text"
        elif item is None or isinstance(item, bool | int):
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                return where, f"{item!r} is not a JSON number"
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                if not isinstance(key, str):
                    return where, f"has a key of type {type(key).__name__}; JSON keys are strings"
                if NUL in key or not _encodable(key):
                    return where, f"has a key ({key!r}) containing a NUL character or a lone surrogate"
                children.append((child, f"{where}.{key}" if where else key, depth + 1))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([(child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item)]))
        else:
            return where, f"a {type(item).__name__} is not JSON"
    return None


def ensure(value: Any, *, path: str = "") -> None:
    """Raise ``NotStorable`` naming the first value that cannot be stored."""
    found = problem(value, path)
    if found is not None:
        raise NotStorable(*found)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (json.loads joins the valid pairs)
        return False
    return True


# -- output: made storable ---------------------------------------------------
@overload
def storable(value: str) -> str: ...
@overload
def storable(value: Mapping[Any, Any]) -> dict[str, JSONValue]: ...
@overload
def storable(value: object) -> JSONValue: ...
def storable(value: object) -> JSONValue:
    """``value`` as JSON a database column accepts, for outputs that echo a server's data.

    PostgreSQL's jsonb refuses ``\\u0000`` and strict JSON has no NaN/Infinity,
    yet ``json.loads`` yields both (and lone surrogates from ``"\\ud800"``): NUL
    and lone surrogates become U+FFFD, non-finite floats their JSON spelling as
    strings, keys strings, tuples lists, anything else its ``str()``.
    """
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {clean_text(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return clean_text(str(value))


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD."""
    if NUL in text:
        text = text.replace(NUL, "\ufffd")
    if not _encodable(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text
