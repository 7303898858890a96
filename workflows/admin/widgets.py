"""Small pieces of HTML the workflow and run admin pages show.

Pure functions of their input (no queries), so each is easy to test and the
admin classes stay declarative. Everything user-provided is escaped by
``format_html``; JSON is pretty-printed inside ``<details>`` so long outputs
stay collapsed until someone wants them.
"""

import json
from datetime import datetime
from typing import Any

from cron_descriptor import ExpressionDescriptor, Options
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from ..scheduling.cron import ScheduleError, next_firings, parse_cron


def status_badge(status: str) -> SafeString:
    """Colour and text: the word is always there, so the colour is never the only signal."""
    # The colours are in workflows/static/workflows/admin.css (no style attributes: see potaflow.security_headers).
    return format_html('<span class="pf-badge pf-status-{}" data-status="{}">{}</span>', status, status, status)


def pretty_json(value: Any, label: str, *, open: bool = False) -> SafeString:  # noqa: A002 - the HTML attribute
    """Collapsible, indented JSON; ``None`` renders as a dash."""
    if value is None:
        return format_html("{}", "–")
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html(
        '<details class="pf-json"{}><summary>{}</summary><pre>{}</pre></details>',
        " open" if open else "",
        label,
        text,
    )


def cron_description(expression: str) -> str:
    """'0 9 * * 1' -> 'At 09:00, only on Monday' (24-hour, like the firing times); an unreadable one says so."""
    options = Options()
    options.use_24hour_time_format = True
    try:
        return ExpressionDescriptor(expression, options).get_description()
    except Exception as exc:  # noqa: BLE001 - cron_descriptor raises its own assorted types
        return f"(cannot describe {expression!r}: {exc})"


def schedule_preview(expression: str, tz_name: str, *, now: datetime | None = None) -> SafeString:
    """The cron in words and its next firings; nothing for an expression the schedule field rejects.

    (croniter reads a 6th field as seconds and cron_descriptor describes
    ``61 * * * *`` happily: a description under the error would contradict it.)
    """
    try:
        parse_cron(expression)
    except ScheduleError:
        return format_html("{}", "–")
    times = next_firings(expression, tz_name, now=now)
    items = format_html_join("", "<li>{}</li>", ((t.strftime("%a %Y-%m-%d %H:%M %Z"),) for t in times))
    return format_html(
        '<div class="pf-cron"><strong class="pf-cron-description">{}</strong>'
        '<div>Next firings ({}):</div><ul class="pf-next-firings">{}</ul></div>',
        cron_description(expression),
        tz_name or "UTC",
        items,
    )


def webhook_url_field(url: str) -> SafeString:
    """The URL in a read-only input with a copy button (the script is in the change form template)."""
    return format_html(
        '<div class="pf-webhook"><input type="text" readonly id="pf-webhook-url" value="{}" size="90" '
        'class="pf-mono pf-select-on-click"> '
        '<button type="button" class="button" id="pf-copy-webhook" data-copy-target="pf-webhook-url">Copy</button>'
        ' <span id="pf-copy-status" aria-live="polite"></span></div>',
        url,
    )


def human_duration(ms: float | None) -> str:
    """23242 -> '23.2 s'; 850 -> '850 ms'; 192000 -> '3 min 12 s'; None -> '–'."""
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
