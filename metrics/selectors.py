"""Read side of the metrics: the queries behind every read endpoint (README, HTTP API).

Constituency figures are the metric fields the calculator (metrics.aggregation) stores on
Constituency; election and dashboard figures are sums over those; per-hour curves,
hour-of-day activity and period rollups come from HourlyStats. Every function runs a fixed
number of queries whatever the number of constituencies, hours or elections.

The ``*_get`` functions are the cached reads: they go through MetricsCache under the
election's versioned key, so a recompute makes them fresh at once, and a cache hit costs
no query at all (constituency reads find their election through the cache too).
"""

import hashlib
from collections.abc import Iterable
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet, Sum
from django.http import Http404
from django.utils import timezone

from elections.models import CONSTITUENCY_FIGURES, Constituency, Election, ElectionStatus
from elections.timebuckets import hour_bucket_ceil, hour_of_day, period_end, period_start, zone
from metrics.cache import CachedRead, metrics_cache
from metrics.models import Anomaly, Episode, HourlyStats

TOP_ANOMALOUS_CONSTITUENCIES = 10
RECENT_ANOMALIES = 20
ID_MAX = 2**63 - 1

COUNTS = ("bulletins_issued", "votes_cast", "transaction_count")
CONSTITUENCY_ORDER_FIELDS = ("id", "code", "registered_voters", *CONSTITUENCY_FIGURES)
CONSTITUENCY_ORDERINGS = tuple(o for name in CONSTITUENCY_ORDER_FIELDS for o in (name, f"-{name}"))
_CONSTITUENCY_COLUMNS = ("id", "election_id", "code", "name", "registered_voters", *CONSTITUENCY_FIGURES)
_EPISODE_COLUMNS = (
    "id",
    "election_id",
    "constituency_id",
    "kind",
    "first_hour",
    "last_hour",
    "hours",
    "peak",
    "open",
    "weight",
)
_ANOMALY_COLUMNS = ("id", "election_id", "constituency_id", "hour", "kind", "weight", "details", "detected_at")


# --- lookups --------------------------------------------------------------------------------


def election_get(*, election_id: int) -> Election:
    election = Election.objects.filter(pk=election_id).first() if 0 < election_id <= ID_MAX else None
    if election is None:
        raise Http404(f"No election with id {election_id}.")
    return election


def _constituency_election_id(constituency_id: int) -> int:
    """The constituency's election, from the cache when possible (it never changes)."""

    def resolve() -> int | None:
        if not 0 < constituency_id <= ID_MAX:
            return None
        return Constituency.objects.filter(pk=constituency_id).values_list("election_id", flat=True).first()

    election_id = metrics_cache.constituency_election(constituency_id, resolve)
    if election_id is None:
        raise Http404(f"No constituency with id {constituency_id}.")
    return election_id


def _ttl(status: str) -> int:
    return metrics_cache.ttl_for(status)


def _election_zone_name(election_id: int) -> str | None:
    """The election's timezone name, cached under its version like every other read.

    Subtle: a timezone can change only while the election has no transactions (Election.clean),
    and then it has no hourly rows either, so a stale name can never change a result."""

    def compute() -> str | None:
        return Election.objects.filter(pk=election_id).values_list("timezone", flat=True).first()

    return metrics_cache.election_read(election_id, "timezone", compute, _ttl(ElectionStatus.CLOSED)).value


def _bounds_on_grid(
    zone_name: str | None, start_time: datetime | None, end_time: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """Query bounds rounded up to the election's hour grid: the same rows are selected (every
    stored hour is a bucket start), and the cache keys built from them are one per bucket,
    whatever instants clients send."""
    if zone_name is None:
        return start_time, end_time
    tz = zone(zone_name)
    return (
        None if start_time is None else hour_bucket_ceil(start_time, tz),
        None if end_time is None else hour_bucket_ceil(end_time, tz),
    )


# --- hourly stats and anomalies (paginated querysets, not cached) ---------------------------


def hourly_stats_list(
    *,
    election_id: int | None = None,
    constituency_id: int | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> QuerySet[HourlyStats]:
    """Hourly rows of an election or a constituency, ``start_time`` <= hour < ``end_time``,
    ordered by hour then constituency. Raises Http404 for an unknown election/constituency."""
    rows = HourlyStats.objects.all()
    if constituency_id is not None:
        # From the database, not the cached constituency -> election map: this is the path
        # a read takes when its cached entry is stale, e.g. after the constituency was deleted.
        election_id = None
        if 0 < constituency_id <= ID_MAX:
            election_id = Constituency.objects.filter(pk=constituency_id).values_list("election_id", flat=True).first()
        if election_id is None:
            raise Http404(f"No constituency with id {constituency_id}.")
        rows = rows.filter(constituency_id=constituency_id)
    else:
        if not (0 < election_id <= ID_MAX and Election.objects.filter(pk=election_id).exists()):
            raise Http404(f"No election with id {election_id}.")
        rows = rows.filter(election_id=election_id)
    if start_time is not None or end_time is not None:
        start_time, end_time = _bounds_on_grid(_election_zone_name(election_id), start_time, end_time)
    if start_time is not None:
        rows = rows.filter(hour__gte=start_time)
    if end_time is not None:
        rows = rows.filter(hour__lt=end_time)
    return rows.order_by("hour", "constituency_id")


def anomaly_list(
    *, election_id: int | None = None, constituency_id: int | None = None, kind: str | None = None
) -> QuerySet[Anomaly]:
    """Anomalies, latest hour first."""
    _filters_owner(election_id=election_id, constituency_id=constituency_id)
    rows = Anomaly.objects.all()
    if election_id is not None:
        rows = rows.filter(election_id=election_id)
    if constituency_id is not None:
        rows = rows.filter(constituency_id=constituency_id)
    if kind is not None:
        rows = rows.filter(kind=kind)
    return rows.order_by("-hour", "constituency_id", "kind", "id")


def _filters_owner(*, election_id: int | None, constituency_id: int | None) -> int | None:
    """The election that list filters narrow to, if any. A filter naming an election or
    constituency that does not exist is a bad request (a typo should not look like "none")."""
    if constituency_id is not None:
        owner = Constituency.objects.filter(pk=constituency_id).values_list("election_id", flat=True).first()
        if owner is None:
            raise ValidationError({"constituency": [f"No constituency with id {constituency_id}."]})
        if election_id is not None and owner != election_id:
            raise ValidationError(
                {"constituency": [f"Constituency {constituency_id} belongs to another election than {election_id}."]}
            )
        return owner
    if election_id is not None and not Election.objects.filter(pk=election_id).exists():
        raise ValidationError({"election": [f"No election with id {election_id}."]})
    return election_id


# --- episodes (cached) -------------------------------------------------------------------------


def episode_list(
    *, election_id: int | None = None, constituency_id: int | None = None, kind: str | None = None, open=None
) -> list[dict]:
    """Episodes, newest first: by last hour, then by id, descending."""
    rows = Episode.objects.all()
    if election_id is not None:
        rows = rows.filter(election_id=election_id)
    if constituency_id is not None:
        rows = rows.filter(constituency_id=constituency_id)
    if kind is not None:
        rows = rows.filter(kind=kind)
    if open is not None:
        rows = rows.filter(open=open)
    return list(rows.order_by("-last_hour", "-id").values(*_EPISODE_COLUMNS))


def episode_list_get(
    *, election_id: int | None = None, constituency_id: int | None = None, kind: str | None = None, open=None
) -> CachedRead:
    """``episode_list`` cached under its election's version, or under the version every
    recompute bumps when no filter names an election."""
    owner = _filters_owner(election_id=election_id, constituency_id=constituency_id)
    filters = {"constituency_id": constituency_id, "kind": kind, "open": open}
    if owner is None:
        return metrics_cache.global_read("episodes", lambda: episode_list(**filters), _dashboard_ttl, **filters)
    return _election_read_with_status(
        owner,
        "episodes",
        lambda: (episode_list(election_id=owner, **filters), election_get(election_id=owner).status),
        **filters,
    )


# --- constituency metrics ---------------------------------------------------------------------


def _constituency_row(values: dict, computed_at: datetime) -> dict:
    row = {name: values[name] for name in _CONSTITUENCY_COLUMNS if name != "id"}
    row["constituency_id"] = values["id"]
    row["computed_at"] = computed_at
    return row


def constituency_metrics(*, constituency_id: int) -> tuple[dict, str]:
    """A constituency's stored metrics plus its 24-slot hour-of-day activity (local hours of
    the election's timezone, summed over all days). Returns (metrics, election status)."""
    constituency = Constituency.objects.select_related("election").filter(pk=constituency_id).first()
    if constituency is None:
        raise Http404(f"No constituency with id {constituency_id}.")
    election = constituency.election
    tz = election.tz
    activity = [{"hour_of_day": i, **dict.fromkeys(COUNTS, 0)} for i in range(24)]
    for hour, *counts in HourlyStats.objects.filter(constituency_id=constituency_id).values_list("hour", *COUNTS):
        slot = activity[hour_of_day(hour, tz)]
        for name, count in zip(COUNTS, counts, strict=False):
            slot[name] += count
    values = {name: getattr(constituency, name) for name in _CONSTITUENCY_COLUMNS}
    metrics = _constituency_row(values, timezone.now())
    metrics["hourly_activity"] = activity
    return metrics, election.status


def constituency_metrics_get(*, constituency_id: int) -> CachedRead:
    election_id = _constituency_election_id(constituency_id)
    return _election_read_with_status(
        election_id, "constituency", lambda: constituency_metrics(constituency_id=constituency_id), id=constituency_id
    )


def constituency_time_period(
    *, constituency_id: int, period: str, start_time: datetime | None = None, end_time: datetime | None = None
) -> tuple[dict, str]:
    """Rollup of a constituency's hours into local hours/days/ISO weeks/months: counts
    summed, participation cumulative at the last hour with data in the period; only periods
    holding data, in time order. Returns (rollup, election status)."""
    constituency = Constituency.objects.select_related("election").filter(pk=constituency_id).first()
    if constituency is None:
        raise Http404(f"No constituency with id {constituency_id}.")
    tz = constituency.election.tz
    rows = HourlyStats.objects.filter(constituency_id=constituency_id)
    if start_time is not None:
        rows = rows.filter(hour__gte=start_time)
    if end_time is not None:
        rows = rows.filter(hour__lt=end_time)
    buckets: dict[datetime, dict] = {}
    for hour, bulletins, votes, total, anomalies, rate in rows.order_by("hour").values_list(
        "hour", *COUNTS, "anomaly_count", "participation_rate"
    ):
        start = period_start(hour, tz, period)
        bucket = buckets.get(start)
        if bucket is None:
            bucket = buckets[start] = {
                "start": start,
                "end": period_end(start, tz, period),
                "bulletins_issued": 0,
                "votes_cast": 0,
                "transaction_count": 0,
                "anomaly_count": 0,
            }
        bucket["bulletins_issued"] += bulletins
        bucket["votes_cast"] += votes
        bucket["transaction_count"] += total
        bucket["anomaly_count"] += anomalies
        # Subtle: the stored hourly rate is already cumulative over *all* the
        # constituency's earlier hours (not only those in range); rows come in hour order,
        # so the last one written is the rate at the end of the period's data.
        bucket["participation_rate"] = rate
    body = {
        "constituency_id": constituency_id,
        "period": period,
        "buckets": [buckets[start] for start in sorted(buckets)],
        "computed_at": timezone.now(),
    }
    return body, constituency.election.status


def constituency_time_period_get(
    *, constituency_id: int, period: str, start_time: datetime | None = None, end_time: datetime | None = None
) -> CachedRead:
    election_id = _constituency_election_id(constituency_id)
    if start_time is not None or end_time is not None:
        start_time, end_time = _bounds_on_grid(_election_zone_name(election_id), start_time, end_time)
    return _election_read_with_status(
        election_id,
        "time-period",
        lambda: constituency_time_period(
            constituency_id=constituency_id, period=period, start_time=start_time, end_time=end_time
        ),
        id=constituency_id,
        period=period,
        start=start_time.timestamp() if start_time else None,
        end=end_time.timestamp() if end_time else None,
    )


def election_constituency_metrics(*, election_id: int) -> tuple[list[dict], str]:
    """Every constituency's stored metrics (no hourly activity), by id."""
    election = election_get(election_id=election_id)
    now = timezone.now()
    rows = Constituency.objects.filter(election_id=election_id).order_by("id").values(*_CONSTITUENCY_COLUMNS)
    return [_constituency_row(row, now) for row in rows], election.status


def constituency_metrics_order(rows: Iterable[dict], ordering: str) -> list[dict]:
    """Sort by one metric (``-`` for descending); ties always by constituency id ascending."""
    name = ordering.lstrip("-")
    name = "constituency_id" if name == "id" else name
    by_id = sorted(rows, key=lambda row: row["constituency_id"])
    # Python's sort is stable, also with reverse=True: equal values keep the id order.
    return sorted(by_id, key=lambda row: row[name], reverse=ordering.startswith("-"))


def election_constituency_metrics_get(*, election_id: int, ordering: str = "id") -> tuple[list[dict], CachedRead]:
    """(constituency metrics in ``ordering``, the cached read they come from)."""
    cached = _election_read_with_status(
        election_id, "constituencies", lambda: election_constituency_metrics(election_id=election_id)
    )
    return constituency_metrics_order(cached.value, ordering), cached


def _election_read_with_status(election_id: int, name: str, compute, **params) -> CachedRead:
    """Cache ``compute() -> (value, election status)`` with the TTL of the election's phase."""
    status: list[str] = []

    def value_only():
        value, election_status = compute()
        status.append(election_status)
        return value

    return metrics_cache.election_read(
        election_id, name, value_only, lambda _: _ttl(status[0] if status else ElectionStatus.ACTIVE), **params
    )


# --- election metrics and dashboards -----------------------------------------------------------


def _elections_metrics(elections: list[Election], now: datetime, *, with_turnout: bool = True) -> list[dict]:
    """Metrics of several elections in three queries: sums over their constituencies'
    stored metrics, and the hourly turnout curve of each."""
    ids = [election.id for election in elections]
    totals = {
        row["election_id"]: row
        for row in Constituency.objects.filter(election_id__in=ids)
        .values("election_id")
        .annotate(
            registered=Sum("registered_voters"),
            bulletins=Sum("total_bulletins_issued"),
            votes=Sum("total_votes_cast"),
            transactions=Sum("total_transactions"),
            anomalies=Sum("total_anomalies"),
            count=Count("id"),
            flagged=Count("id", filter=Q(total_anomalies__gt=0)),
        )
        .order_by()
    }
    hourly_votes: dict[int, list[tuple[datetime, int]]] = {pk: [] for pk in ids}
    if with_turnout and ids:
        for election_id, hour, votes in (
            HourlyStats.objects.filter(election_id__in=ids)
            .values("election_id", "hour")
            .annotate(votes=Sum("votes_cast"))
            .order_by("election_id", "hour")
            .values_list("election_id", "hour", "votes")
        ):
            hourly_votes[election_id].append((hour, votes))

    results = []
    for election in elections:
        row = totals.get(election.id, {})
        registered = row.get("registered") or 0
        votes = row.get("votes") or 0
        turnout, running = [], 0
        for hour, hour_votes in hourly_votes[election.id]:
            running += hour_votes
            turnout.append({"hour": hour, "votes_cast": hour_votes, "participation_rate": _rate(running, registered)})
        results.append(
            {
                "election_id": election.id,
                "code": election.code,
                "name": election.name,
                "status": election.status_at(now),
                "registered_voters": registered,
                "total_bulletins_issued": row.get("bulletins") or 0,
                "total_votes_cast": votes,
                "total_transactions": row.get("transactions") or 0,
                "total_anomalies": row.get("anomalies") or 0,
                # Votes over registered voters of the whole election, not a mean of rates.
                "participation_rate": _rate(votes, registered),
                "constituency_count": row.get("count") or 0,
                "constituencies_with_anomalies": row.get("flagged") or 0,
                "hourly_turnout": turnout,
                "certified_at": election.certified_at,
                "snapshot_sha256": election_snapshot_sha256_get(election_id=election.id)
                if election.certified_at
                else None,
                "computed_at": now,
            }
        )
    return results


def election_snapshot_sha256(*, election_id: int) -> str:
    """SHA-256 of the canonical text of an election's figures: anyone can recompute it from
    the API (README, "Certification": the procedure; a test does exactly that).

    The text is two sections of comma-separated integers, one line per row, each line
    ending in a newline: ``hourly_stats`` then one line per hourly row ordered by hour then
    constituency (constituency_id, hour as Unix seconds, bulletins_issued, votes_cast,
    transaction_count); ``constituencies`` then one line per constituency ordered by id
    (constituency_id, registered_voters, total_bulletins_issued, total_votes_cast,
    total_transactions). Integers only: every rate is a function of them, and integers
    print the same in every language."""
    digest = hashlib.sha256(b"hourly_stats\n")
    rows = (
        HourlyStats.objects.filter(election_id=election_id)
        .order_by("hour", "constituency_id")
        .values_list("constituency_id", "hour", "bulletins_issued", "votes_cast", "transaction_count")
    )
    for constituency_id, hour, bulletins, votes, count in rows.iterator(chunk_size=5000):
        digest.update(f"{constituency_id},{int(hour.timestamp())},{bulletins},{votes},{count}\n".encode())
    digest.update(b"constituencies\n")
    for row in (
        Constituency.objects.filter(election_id=election_id)
        .order_by("id")
        .values_list("id", "registered_voters", "total_bulletins_issued", "total_votes_cast", "total_transactions")
        .iterator(chunk_size=5000)
    ):
        digest.update((",".join(map(str, row)) + "\n").encode())
    return digest.hexdigest()


def election_snapshot_sha256_get(*, election_id: int) -> str:
    """The snapshot hash, computed once per version of the election's figures."""
    return metrics_cache.election_read(
        election_id,
        "snapshot",
        lambda: election_snapshot_sha256(election_id=election_id),
        metrics_cache.ttl_for("closed"),
    ).value


def _rate(votes: int, registered: int) -> float:
    return 100.0 * votes / registered if registered else 0.0


def election_metrics(*, election_id: int) -> dict:
    election = election_get(election_id=election_id)
    return _elections_metrics([election], timezone.now())[0]


def election_metrics_get(*, election_id: int) -> CachedRead:
    return metrics_cache.election_read(
        election_id,
        "election",
        lambda: election_metrics(election_id=election_id),
        lambda value: _ttl(value["status"]),
    )


def _summary(metrics: list[dict], now: datetime) -> dict:
    registered = sum(m["registered_voters"] for m in metrics)
    votes = sum(m["total_votes_cast"] for m in metrics)
    return {
        "elections": len(metrics),
        "active_elections": sum(1 for m in metrics if m["status"] == ElectionStatus.ACTIVE),
        "constituencies": sum(m["constituency_count"] for m in metrics),
        "registered_voters": registered,
        "total_bulletins_issued": sum(m["total_bulletins_issued"] for m in metrics),
        "total_votes_cast": votes,
        "total_transactions": sum(m["total_transactions"] for m in metrics),
        "total_anomalies": sum(m["total_anomalies"] for m in metrics),
        "participation_rate": _rate(votes, registered),
        "computed_at": now,
    }


def dashboard_summary() -> dict:
    """Totals over every election (participation = all votes ÷ all registered voters)."""
    now = timezone.now()
    return _summary(_elections_metrics(list(Election.objects.order_by("id")), now, with_turnout=False), now)


def dashboard_detailed() -> dict:
    """The summary, each election's metrics, the most anomalous constituencies (highest
    score, ties by id) and the latest anomalies."""
    now = timezone.now()
    metrics = _elections_metrics(list(Election.objects.order_by("id")), now)
    top = Constituency.objects.order_by("-anomaly_score", "id").values(*_CONSTITUENCY_COLUMNS)[
        :TOP_ANOMALOUS_CONSTITUENCIES
    ]
    recent = Anomaly.objects.order_by("-hour", "constituency_id", "kind", "id").values(*_ANOMALY_COLUMNS)
    return {
        "summary": _summary(metrics, now),
        "elections": metrics,
        "top_anomalous_constituencies": [_constituency_row(row, now) for row in top],
        "recent_anomalies": list(recent[:RECENT_ANOMALIES]),
        "computed_at": now,
    }


def _dashboard_ttl(value: dict) -> int:
    # Elections can be created (and change phase) without a recompute: stay short.
    return _ttl(ElectionStatus.ACTIVE)


def dashboard_summary_get() -> CachedRead:
    return metrics_cache.global_read("dashboard-summary", dashboard_summary, _dashboard_ttl)


def dashboard_detailed_get() -> CachedRead:
    return metrics_cache.global_read("dashboard-detailed", dashboard_detailed, _dashboard_ttl)
