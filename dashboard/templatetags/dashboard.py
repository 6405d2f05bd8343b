"""Formatting for the dashboard's templates: local times with their offset, numbers in the
active language, labels of anomaly kinds and statuses, and table links that keep the query."""

from datetime import datetime

from django import template
from django.utils.formats import get_format
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import mark_safe

from dashboard import presenters

register = template.Library()


@register.simple_tag(takes_context=True)
def local_time(context, value: datetime | None, tz=None):
    """``<time>`` with the UTC instant, showing the local time of the page's election; its
    offset is shown when it is not the same for the whole election (DST) or when asked for
    by passing a zone (the elections list, where each row has its own)."""
    if value is None:
        return "—"
    zone = tz or context.get("tz")
    with_offset = tz is not None or context.get("offset_varies", True)
    return format_html(
        '<time datetime="{}">{}</time>',
        presenters.api_time(value),
        presenters.local_label(value, zone, with_offset=with_offset),
    )


@register.filter
def num(value, decimals=0):
    """A number in the active language's marks (presenters.number_text)."""
    if value is None:
        return "—"
    return presenters.number_text(
        value, int(decimals), get_format("THOUSAND_SEPARATOR"), get_format("DECIMAL_SEPARATOR")
    )


@register.simple_tag
def table_body(rows):
    """``<tr>``s of cells formatted by presenters: text escaped, safe HTML (links, ``<time>``)
    kept. Plain joins, not format_html per cell: a table is hundreds of cells."""
    return mark_safe(  # every cell escaped, or already safe
        "\n".join("<tr>" + "".join(f"<td>{presenters.html_cell(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    )


@register.filter
def kind_label(kind: str) -> str:
    return presenters.ANOMALY_KINDS.get(kind, kind)


@register.filter
def status_label(status: str) -> str:
    return presenters.STATUSES.get(status, status)


@register.filter
def details_text(details: dict) -> str:
    return ", ".join(f"{key}: {value}" for key, value in sorted((details or {}).items()))


@register.simple_tag(takes_context=True)
def query_with(context, **changes) -> str:
    """The current query string with some parameters replaced (empty values dropped)."""
    params = dict(context["request"].GET.items())
    params.update(changes)
    return "?" + urlencode({key: value for key, value in params.items() if value not in (None, "")})


@register.simple_tag(takes_context=True)
def sort_query(context, field: str) -> str:
    """Sort by ``field``; descending first for figures, flipped when already sorted by it."""
    current = context["table"].sort
    if current == f"-{field}":
        target = field
    elif current == field:
        target = f"-{field}"
    else:
        target = field if field in ("id", "code") else f"-{field}"
    return query_with(context, sort=target, page="")


@register.simple_tag(takes_context=True)
def sort_state(context, field: str) -> str:
    current = context["table"].sort
    return "ascending" if current == field else "descending" if current == f"-{field}" else "none"
