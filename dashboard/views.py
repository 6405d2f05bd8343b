"""The observer pages (SPEC section 13): thin views over metrics.selectors, the same cached
reads the API serves, rendered with Django templates.

Each page names the API endpoint it keeps fresh from (``live_url``): while an election is
active the page's script polls it with If-None-Match (docs in the README, "Dashboard").
"""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from dashboard import presenters
from elections.models import Constituency, Election, ElectionStatus
from elections.permissions import can_read
from metrics import selectors

RECENT_ANOMALIES = 20


def read_permission(view):
    """The API's read permission: anyone when anonymous reads are on, else a login page."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not can_read(request.user):
            return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)

    return wrapped


CODE_MAX_LENGTH = 64  # Election.code and Constituency.code


def _by_code(queryset, **codes):
    """The object with these codes, or 404; a code no column can hold (too long, a NUL byte
    that PostgreSQL refuses in any string) names nothing."""
    if any(len(code) > CODE_MAX_LENGTH or "\x00" in code for code in codes.values()):
        raise Http404("No such code.")
    return get_object_or_404(queryset, **codes)


def _timezone_context(election: Election) -> dict:
    tz = election.tz
    starts, ends = (presenters.utc_offset_label(t, tz) for t in (election.starts_at, election.ends_at))
    return {"tz": tz, "tz_name": election.timezone, "offset_label": starts, "offset_varies": starts != ends}


def _csv(name: str, query: str = "", **kwargs) -> str:
    return reverse(name, kwargs=kwargs) + f"?{query}format=csv"


def _downloads(*links: tuple[str, str]) -> list[tuple[str, str]]:
    return [(presenters.DOWNLOAD_LABELS[key], url) for key, url in links]


@require_GET
@read_permission
def elections_page(request):
    """Every election with its headline figures, the most anomalous constituencies and the
    latest anomalies (the API's detailed dashboard)."""
    cached = selectors.dashboard_detailed_get()
    detailed = cached.value
    elections = {election.id: election for election in Election.objects.all()}
    rows = [
        {
            **metrics,
            "election": elections[metrics["election_id"]],
            **_timezone_context(elections[metrics["election_id"]]),
        }
        for metrics in detailed["elections"]
        if metrics["election_id"] in elections
    ]
    anomalies = [a for a in detailed["recent_anomalies"] if a["election_id"] in elections]
    codes = dict(
        Constituency.objects.filter(id__in={a["constituency_id"] for a in anomalies}).values_list("id", "code")
    )
    top = [
        {**row, "election": elections[row["election_id"]]}
        for row in detailed["top_anomalous_constituencies"]
        if row["election_id"] in elections and row["anomaly_score"] > 0
    ]
    live = any(row["status"] == ElectionStatus.ACTIVE for row in rows)
    return render(
        request,
        "dashboard/elections.html",
        {
            "summary": detailed["summary"],
            "elections": rows,
            "top": top,
            "anomalies": [
                {
                    **a,
                    "election": elections[a["election_id"]],
                    "constituency_code": codes.get(a["constituency_id"]),
                    **_timezone_context(elections[a["election_id"]]),
                }
                for a in anomalies
            ],
            "computed_at": presenters.api_time(detailed["computed_at"]),
            "live_url": reverse("dashboard-summary") if live else "",
            "downloads": _downloads(
                ("elections", _csv("election-list")),
                ("summary", _csv("dashboard-summary")),
                ("detailed", _csv("dashboard-detailed")),
                ("anomalies", _csv("anomaly-list")),
            ),
        },
    )


def _bad_request(request, form):
    return render(request, "dashboard/bad_request.html", {"errors": form.errors}, status=400)


@require_GET
@read_permission
def election_page(request, election_code: str):
    """Headline figures, the turnout curve, the constituency table and recent anomalies."""
    election = _by_code(Election.objects.all(), code=election_code)
    form = presenters.ConstituencyTableForm(request.GET)
    if not form.is_valid():
        return _bad_request(request, form)
    sort = form.cleaned_data["sort"] or "id"
    metrics = selectors.election_metrics_get(election_id=election.id).value
    ordered, _ = selectors.election_constituency_metrics_get(election_id=election.id, ordering=sort)
    try:
        table = presenters.constituency_table(
            ordered, q=form.cleaned_data["q"], sort=sort, page=form.cleaned_data["page"] or 1
        )
    except presenters.PageNotFound:
        raise Http404("No such page of the constituency table.") from None
    codes = {row["constituency_id"]: row["code"] for row in ordered}
    anomalies = list(selectors.anomaly_list(election_id=election.id)[:RECENT_ANOMALIES])
    context = _timezone_context(election)
    f = presenters.Formatter(context["tz"], with_offset=context["offset_varies"])
    live = metrics["status"] == ElectionStatus.ACTIVE
    return render(
        request,
        "dashboard/election.html",
        {
            **context,
            "election": election,
            "metrics": metrics,
            "charts": presenters.turnout_charts(metrics["hourly_turnout"], context["tz"]),
            "table": table,
            "table_columns": presenters.TABLE_COLUMNS,
            "table_rows": presenters.constituency_rows(table.rows, election.code, f),
            "turnout_rows": presenters.turnout_rows(metrics["hourly_turnout"], f),
            "anomalies": [{"anomaly": a, "constituency_code": codes.get(a.constituency_id)} for a in anomalies],
            "computed_at": presenters.api_time(metrics["computed_at"]),
            "live_url": reverse("election-metrics", kwargs={"election_id": election.id}) if live else "",
            "downloads": _downloads(
                ("election_metrics", _csv("election-metrics", election_id=election.id)),
                ("constituency_metrics", _csv("election-constituencies", election_id=election.id)),
                ("hourly_stats", _csv("hourly-stats-election", election_id=election.id)),
                ("anomalies", _csv("anomaly-list", f"election={election.id}&")),
            ),
        },
    )


@require_GET
@read_permission
def constituency_page(request, election_code: str, constituency_code: str):
    """Hourly bulletins, votes and velocity; hour-of-day activity; anomalies."""
    election = _by_code(Election.objects.all(), code=election_code)
    constituency = _by_code(Constituency.objects.filter(election=election).only("id"), code=constituency_code)
    metrics = selectors.constituency_metrics_get(constituency_id=constituency.id).value
    hours = list(
        selectors.hourly_stats_list(constituency_id=constituency.id).values(
            "hour",
            "bulletins_issued",
            "votes_cast",
            "transaction_count",
            "bulletin_velocity",
            "vote_velocity",
            "participation_rate",
            "anomaly_count",
        )
    )
    anomalies = list(selectors.anomaly_list(constituency_id=constituency.id)[:RECENT_ANOMALIES])
    context = _timezone_context(election)
    f = presenters.Formatter(context["tz"], with_offset=context["offset_varies"])
    live = election.status == ElectionStatus.ACTIVE
    return render(
        request,
        "dashboard/constituency.html",
        {
            **context,
            "election": election,
            "metrics": metrics,
            "hour_rows": presenters.hour_rows(hours, f),
            "activity_rows": presenters.activity_rows(metrics["hourly_activity"], f),
            "charts": presenters.constituency_charts(hours, metrics["hourly_activity"], context["tz"]),
            "anomalies": [{"anomaly": a, "constituency_code": metrics["code"]} for a in anomalies],
            "computed_at": presenters.api_time(metrics["computed_at"]),
            "live_url": reverse("constituency-metrics", kwargs={"constituency_id": constituency.id}) if live else "",
            "downloads": _downloads(
                ("constituency_metrics", _csv("constituency-metrics", constituency_id=constituency.id)),
                ("hourly_stats", _csv("hourly-stats-constituency", constituency_id=constituency.id)),
                ("daily", _csv("constituency-time-period", "period=day&", constituency_id=constituency.id)),
                ("anomalies", _csv("anomaly-list", f"constituency={constituency.id}&")),
            ),
        },
    )
