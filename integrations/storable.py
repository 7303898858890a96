"""Values a database accepts, made from what remote servers send.

PostgreSQL refuses NUL characters in text and jsonb, strict JSON has no
NaN/Infinity, and UTF-8 has no lone surrogates; ``json.loads`` happily yields
all three. Actions pass server data through ``storable`` before returning it,
and error messages go through ``clean_text``.
"""

import math
import re
from collections.abc import Mapping
from typing import Any


def storable(value: Any) -> Any:
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
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (json.loads joins the valid pairs)
        text = _SURROGATE.sub("\ufffd", text)
    return text
