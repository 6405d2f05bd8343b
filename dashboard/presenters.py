"""What the pages show, shaped from selector results: local-time labels, chart series and the
constituency table's slice. Nothing here computes a figure; every number is one a selector
returned (docs/ARCHITECTURE: pages reuse selectors)."""

import html
from dataclasses import dataclass
from datetime import datetime, tzinfo

from django import forms
from django.core.paginator import Paginator
from django.urls import reverse
from django.utils.formats import get_format
from django.utils.safestring import SafeData, SafeString, mark_safe
from django.utils.translation import gettext_lazy as _
from rest_framework.fields import DateTimeField

from metrics.selectors import CONSTITUENCY_ORDERINGS

TABLE_PAGE_SIZE = 50
SEARCH_MAX_LENGTH = 100
PAGE_MAX = 1_000_000

ANOMALY_KINDS = {
    "turnout_over_100": _("Turnout over 100 %"),
    "votes_exceed_bulletins": _("Votes exceed bulletins"),
    "velocity_spike": _("Velocity spike"),
    "outside_voting_window": _("Outside the voting window"),
}
DOWNLOAD_LABELS = {
    "elections": _("Elections"),
    "summary": _("Summary over all elections"),
    "detailed": _("Detailed dashboard"),
    "anomalies": _("Anomalies"),
    "election_metrics": _("Election metrics and hourly turnout"),
    "constituency_metrics": _("Constituency metrics"),
    "hourly_stats": _("Hourly statistics"),
    "daily": _("Daily rollup"),
}
# The constituency table's columns: (API ordering field or None when not sortable, title).
TABLE_COLUMNS = [
    ("code", _("Code")),
    (None, _("Name")),
    ("registered_voters", _("Registered voters")),
    ("total_bulletins_issued", _("Bulletins issued")),
    ("total_votes_cast", _("Votes cast")),
    ("participation_rate", _("Participation, %")),
    ("total_anomalies", _("Anomalies")),
    ("anomaly_score", _("Anomaly score")),
]
STATUSES = {"scheduled": _("scheduled"), "active": _("active"), "closed": _("closed")}

_API_TIME = DateTimeField()


def api_time(value: datetime) -> str:
    """A time as the API's JSON writes it, so the page's script can compare the two."""
    return _API_TIME.to_representation(value)


def utc_offset_label(value: datetime, tz: tzinfo) -> str:
    """``UTC+03:00``, ``UTC+05:30``, ``UTC−03:00`` for the instant's local offset."""
    offset = value.astimezone(tz).utcoffset()
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "−"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def local_label(value: datetime, tz: tzinfo, *, with_offset: bool = True) -> str:
    local = value.astimezone(tz)
    text = local.strftime("%Y-%m-%d %H:%M")
    return f"{text} {utc_offset_label(value, tz)}" if with_offset else text


def number_text(value, decimals: int, grouping: str, mark: str) -> str:
    """``value`` grouped by thousands and with ``decimals`` decimals, in the language's marks
    (as the page script's Intl.NumberFormat writes it)."""
    text = f"{value:,.{decimals}f}"
    return text.replace(",", "\0").replace(".", mark).replace("\0", grouping)


def html_cell(value) -> str:
    """A table cell's HTML: safe HTML as it is, anything else escaped."""
    return value if isinstance(value, SafeData) else html.escape(str(value))


class Formatter:
    """Numbers and times of one page, in the active language and the election's timezone.

    The long tables (a turnout table, a constituency's hours) are formatted here, once per
    cell, rather than through a template filter per cell: most of a page's server time was
    the template engine's per-cell work."""

    def __init__(self, tz: tzinfo, *, with_offset: bool):
        self.tz, self.with_offset = tz, with_offset
        self.grouping, self.mark = get_format("THOUSAND_SEPARATOR"), get_format("DECIMAL_SEPARATOR")

    def num(self, value, decimals: int = 0) -> str:
        return "—" if value is None else number_text(value, decimals, self.grouping, self.mark)

    def time(self, value: datetime) -> SafeString:
        label = local_label(value, self.tz, with_offset=self.with_offset)
        return mark_safe(f'<time datetime="{html.escape(api_time(value))}">{html.escape(label)}</time>')


def turnout_rows(hourly_turnout: list[dict], f: Formatter) -> list[tuple]:
    return [(f.time(r["hour"]), f.num(r["votes_cast"]), f.num(r["participation_rate"], 2)) for r in hourly_turnout]


def hour_rows(hours: list[dict], f: Formatter) -> list[tuple]:
    return [
        (
            f.time(r["hour"]),
            f.num(r["bulletins_issued"]),
            f.num(r["votes_cast"]),
            f.num(r["transaction_count"]),
            f.num(r["bulletin_velocity"], 2),
            f.num(r["vote_velocity"], 2),
            f.num(r["participation_rate"], 2),
            f.num(r["anomaly_count"]),
        )
        for r in hours
    ]


def activity_rows(activity: list[dict], f: Formatter) -> list[tuple]:
    return [
        (
            f"{r['hour_of_day']:02d}:00",
            f.num(r["bulletins_issued"]),
            f.num(r["votes_cast"]),
            f.num(r["transaction_count"]),
        )
        for r in activity
    ]


def constituency_rows(rows: list[dict], election_code: str, f: Formatter) -> list[tuple]:
    return [
        (
            mark_safe(  # both parts escaped
                f'<a href="{html.escape(reverse("dashboard:constituency", args=[election_code, r["code"]]))}">'
                f"{html.escape(r['code'])}</a>"
            ),
            r["name"],
            f.num(r["registered_voters"]),
            f.num(r["total_bulletins_issued"]),
            f.num(r["total_votes_cast"]),
            f.num(r["participation_rate"], 2),
            f.num(r["total_anomalies"]),
            f.num(r["anomaly_score"], 2),
        )
        for r in rows
    ]


def _short_label(value: datetime, tz: tzinfo) -> str:
    return value.astimezone(tz).strftime("%m-%d %H:%M")


@dataclass(frozen=True)
class Series:
    name: str
    values: list


def chart(kind: str, labels: list[str], series: list[Series], *, decimals: int = 0, unit: str = "") -> dict:
    """A chart's data for the page script (json_script): one mark per value of each series."""
    return {
        "type": kind,
        "labels": labels,
        "series": [{"name": str(s.name), "data": s.values} for s in series],
        "decimals": decimals,
        "unit": unit,
    }


def turnout_charts(hourly_turnout: list[dict], tz: tzinfo) -> dict:
    """The election's hourly votes (bars) and cumulative participation (line), by local hour."""
    labels = [_short_label(row["hour"], tz) for row in hourly_turnout]
    return {
        "votes": chart("bar", labels, [Series(_("Votes cast"), [row["votes_cast"] for row in hourly_turnout])]),
        "participation": chart(
            "line",
            labels,
            [Series(_("Participation, %"), [row["participation_rate"] for row in hourly_turnout])],
            decimals=2,
            unit="%",
        ),
    }


def constituency_charts(hours: list[dict], activity: list[dict], tz: tzinfo) -> dict:
    """A constituency's hourly bulletins and votes, velocities, and hour-of-day activity."""
    labels = [_short_label(row["hour"], tz) for row in hours]
    return {
        "counts": chart(
            "bar",
            labels,
            [
                Series(_("Bulletins issued"), [row["bulletins_issued"] for row in hours]),
                Series(_("Votes cast"), [row["votes_cast"] for row in hours]),
            ],
        ),
        "velocity": chart(
            "line",
            labels,
            [
                Series(_("Bulletins per minute"), [row["bulletin_velocity"] for row in hours]),
                Series(_("Votes per minute"), [row["vote_velocity"] for row in hours]),
            ],
            decimals=2,
        ),
        "activity": chart(
            "bar",
            [f"{row['hour_of_day']:02d}" for row in activity],
            [
                Series(_("Bulletins issued"), [row["bulletins_issued"] for row in activity]),
                Series(_("Votes cast"), [row["votes_cast"] for row in activity]),
            ],
        ),
    }


class ConstituencyTableForm(forms.Form):
    """The constituency table's query: search, sort (an API ordering) and page."""

    q = forms.CharField(required=False, max_length=SEARCH_MAX_LENGTH, strip=True)
    sort = forms.ChoiceField(required=False, choices=[(o, o) for o in CONSTITUENCY_ORDERINGS])
    page = forms.IntegerField(required=False, min_value=1, max_value=PAGE_MAX)


@dataclass
class ConstituencyTable:
    rows: list[dict]
    page: object  # django.core.paginator.Page
    q: str
    sort: str
    total: int


class PageNotFound(Exception):
    """A table page past the last one."""


def constituency_table(ordered: list[dict], *, q: str, sort: str, page: int) -> ConstituencyTable:
    """Search rows already in the API's ``ordering`` (code or name contains ``q``,
    case-insensitive) and take one page."""
    needle = q.casefold()
    matched = [r for r in ordered if needle in r["code"].casefold() or needle in r["name"].casefold()] if q else ordered
    paginator = Paginator(matched, TABLE_PAGE_SIZE, allow_empty_first_page=True)
    if page > paginator.num_pages:
        raise PageNotFound(page)
    current = paginator.page(page)
    return ConstituencyTable(rows=list(current.object_list), page=current, q=q, sort=sort, total=len(matched))
