import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def pf_json(value: Any) -> str:
    """Indented JSON (escaped by the template like any text)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
