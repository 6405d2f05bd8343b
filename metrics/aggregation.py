"""Write side of the metrics: recompute hourly stats, anomalies and constituency metrics.

One entry point, ``metrics_recompute``, recounts a *scope* of buckets from the Transaction
rows with one SQL aggregate, then re-derives everything that depends on those counts:
the cumulative participation of every later hour of the touched constituencies, the
peer-judged spikes of the touched hours across the whole election, anomaly counts, and the
touched constituencies' totals. It plans in memory and writes only what changed, with
upserts, so running it twice gives the same rows and concurrent runs cannot duplicate.
"""

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, models, transaction
from django.db.models import BooleanField, Case, Count, IntegerField, Q, Sum, Value, When
from django.db.models.expressions import RawSQL
from django.utils import timezone

from elections.models import CONSTITUENCY_METRIC_FIELDS, Constituency, Election, Transaction, TransactionKind
from elections.timebuckets import HOUR, hour_bucket
from metrics import anomalies
from metrics.cache import metrics_cache
from metrics.episodes import episodes_refresh
from metrics.models import HOURLY_COMPUTED_FIELDS, Anomaly, AnomalyKind, Episode, HourlyStats

logger = logging.getLogger(__name__)

WRITE_BATCH = 2000
UPSERT_BATCH = 20000  # rows per unnest upsert: one statement's arrays, a few MB
STAGE_MIN_ROWS = 5000  # from here an upsert stages its rows by COPY instead of arrays
VALUES_CHUNK = 5000  # bucket pairs per VALUES list on SQLite (two bound parameters each)
IN_LIST_MAX = 200  # ids in one IN (...) filter before loading the election's rows is cheaper
HOURLY_FIELDS = list(HOURLY_COMPUTED_FIELDS)
HOURLY_ROW_FIELDS = ["election", "constituency", "hour", *HOURLY_FIELDS]
ANOMALY_UPSERT_FIELDS = ["election", "constituency", "hour", "kind", "weight", "details", "detected_at"]
CONSTITUENCY_FIELDS = list(CONSTITUENCY_METRIC_FIELDS)


@dataclass(frozen=True)
class Scope:
    """Which buckets to recount. ``q`` filters Transaction, HourlyStats and Anomaly alike:
    all three carry ``election_id``, ``constituency_id`` and ``hour``."""

    q: Q
    all_constituencies: bool = False
    whole_election: bool = False
    # Move the touched constituencies' totals by the recount's deltas instead of re-summing
    # their rows: only for flushes, whose rows nothing else has touched (see metrics_recompute).
    totals_by_delta: bool = False

    @classmethod
    def election(cls, *, since: datetime | None = None, until: datetime | None = None) -> "Scope":
        q = _hour_range(since, until)
        return cls(q=q, all_constituencies=True, whole_election=since is None and until is None)

    @classmethod
    def constituencies(cls, ids, *, since: datetime | None = None, until: datetime | None = None) -> "Scope":
        return cls(q=Q(constituency_id__in=sorted(set(ids))) & _hour_range(since, until))

    @classmethod
    def hours(cls, hours) -> "Scope":
        """The given hours in every constituency (refreshes the current hour's velocities)."""
        return cls(q=Q(hour__in=sorted(set(hours))), all_constituencies=True)

    @classmethod
    def marks(cls, marks, *, totals_by_delta: bool = False) -> "Scope":
        """From dirty marks: (constituency_id, hour) pairs, hour None meaning every hour of
        the constituency and constituency None the whole election."""
        whole_constituencies: set[int] = set()
        by_hour: dict[datetime, set[int]] = defaultdict(set)
        for constituency_id, hour in marks:
            if constituency_id is None:
                return cls.election()
            if hour is None:
                whole_constituencies.add(constituency_id)
            else:
                by_hour[hour].add(constituency_id)
        q = Q(pk__in=[])
        if whole_constituencies:
            q |= Q(constituency_id__in=sorted(whole_constituencies))
        pairs = sorted((c, h) for h, ids in by_hour.items() for c in ids if c not in whole_constituencies)
        if pairs:
            q |= _buckets_in(pairs)
        return cls(q=q, totals_by_delta=totals_by_delta)


def _buckets_in(pairs: list[tuple[int, datetime]]) -> Q:
    """``(constituency_id, hour) IN`` the pairs, as one semi-join.

    Subtle: PostgreSQL then probes the (constituency, hour) index once per bucket, and its
    covering columns make the recount index-only; an OR of ``hour = h AND constituency_id IN
    (...)`` per hour plans as a bitmap heap scan that reads every page holding a row of the
    buckets (a 2,000-bucket flush: 400 ms against 100 ms; bench, issue 6), and SQLite
    refuses such an OR past 1,000 hours (expression tree too deep). SQLite takes the pairs as
    a VALUES list, in chunks that stay under its limit of bound parameters."""
    columns = '("constituency_id", "hour") IN '
    if connection.vendor == "postgresql":
        condition = RawSQL(
            columns + "(SELECT * FROM unnest(%s::bigint[], %s::timestamptz[]))",
            ([c for c, _ in pairs], [h for _, h in pairs]),
            output_field=BooleanField(),
        )
        return Q(condition)
    q = Q(pk__in=[])
    for start in range(0, len(pairs), VALUES_CHUNK):
        chunk = pairs[start : start + VALUES_CHUNK]
        params = [value for c, h in chunk for value in (c, connection.ops.adapt_datetimefield_value(h))]
        values = ", ".join(["(%s, %s)"] * len(chunk))
        q |= Q(RawSQL(f"{columns}(VALUES {values})", params, output_field=BooleanField()))
    return q


def _hour_range(since: datetime | None, until: datetime | None) -> Q:
    q = Q()
    if since is not None:
        q &= Q(hour__gte=since - timedelta(minutes=59, seconds=59, microseconds=999999))
    if until is not None:
        q &= Q(hour__lt=until)
    return q


@dataclass
class RecomputeResult:
    buckets_recounted: int = 0
    rows_written: int = 0
    rows_deleted: int = 0
    anomalies_written: int = 0
    anomalies_deleted: int = 0
    constituencies_refreshed: int = 0

    def __iadd__(self, other: "RecomputeResult") -> "RecomputeResult":
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


@dataclass(slots=True)
class _Row:
    id: int | None
    bulletins: int
    votes: int
    total: int
    bulletin_velocity: float
    vote_velocity: float
    rate: float
    anomaly_count: int
    recounted: bool = False
    outside: int = 0


@dataclass
class _Plan:
    series: dict[int, dict[datetime, _Row]] = field(default_factory=lambda: defaultdict(dict))
    deleted_ids: list[int] = field(default_factory=list)
    # Hours before ``since`` are not reloaded: only their cumulative (votes, bulletins).
    since: datetime | None = None
    prefix: dict[int, tuple[int, int]] = field(default_factory=dict)


def velocity_minutes(hour: datetime, *, starts_at: datetime, ends_at: datetime, now: datetime) -> float:
    """Minutes of the bucket inside the voting window and already past; at least 1."""
    start = max(hour, starts_at)
    end = min(hour + HOUR, ends_at, now)
    return max(1.0, (end - start).total_seconds() / 60) if end > start else 1.0


def metrics_recompute(*, election_id: int, scope: Scope, now: datetime | None = None) -> RecomputeResult:
    """Recount ``scope`` from transactions and bring every dependent figure up to date."""
    now = now or timezone.now()
    result = RecomputeResult()
    with transaction.atomic():
        # Subtle: recomputes of one election are serialized, so a slower run that read older
        # transactions can never overwrite a newer run's rows. FOR NO KEY UPDATE does not
        # block ingest, whose foreign-key checks only take KEY SHARE on the election row.
        election = Election.objects.select_for_update(no_key=True).get(pk=election_id)

        counts = _recount(election, scope)
        stored_in_scope = {
            (c, h): pk
            for pk, c, h in HourlyStats.objects.filter(election_id=election_id)
            .filter(scope.q)
            .values_list("id", "constituency_id", "hour")
            .order_by()
        }
        scope_keys = counts.keys() | stored_in_scope.keys()
        touched = {c for c, _ in scope_keys}
        changed_hours = {h for _, h in scope_keys}
        result.buckets_recounted = len(scope_keys)

        since = None if scope.whole_election or not changed_hours else min(changed_hours)
        plan = _load_series(election_id, scope, touched, since)
        peers_outside = _load_other_peers(election_id, scope, touched, changed_hours)
        stored_totals = _constituency_rows(election_id, scope, touched | {c for _, c, _, _, _ in peers_outside})
        voters = {c: row[0] for c, row in stored_totals.items()}

        # What the recount moves each constituency's totals by: new minus stored figures.
        totals_delta: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        for key, pk in stored_in_scope.items():
            if key not in counts:
                plan.deleted_ids.append(pk)
                gone = plan.series[key[0]].pop(key[1])
                _delta_add(totals_delta[key[0]], gone, sign=-1)
        minutes_in = {
            h: velocity_minutes(h, starts_at=election.starts_at, ends_at=election.ends_at, now=now)
            for h in changed_hours
        }
        for (c, h), (bulletins, votes, total, outside) in counts.items():
            minutes = minutes_in[h]
            row = plan.series[c].get(h) or _Row(None, 0, 0, 0, 0.0, 0.0, 0.0, 0)
            if scope.totals_by_delta:
                _delta_add(totals_delta[c], row, sign=-1)
            row.bulletins, row.votes, row.total, row.outside = bulletins, votes, total, outside
            if scope.totals_by_delta:
                _delta_add(totals_delta[c], row, sign=1)
            row.bulletin_velocity, row.vote_velocity = bulletins / minutes, votes / minutes
            row.recounted = True
            plan.series[c][h] = row

        desired = _desired_anomalies(plan, voters, counts, changed_hours, peers_outside)
        existing = _existing_anomalies(election_id, scope, touched, changed_hours, since)

        def in_region(c: int, h: datetime, kind: str) -> bool:
            if scope.whole_election:
                return True
            if kind in anomalies.CUMULATIVE_KINDS:
                return c in touched and (since is None or h >= since)
            if kind == AnomalyKind.OUTSIDE_VOTING_WINDOW:
                return (c, h) in scope_keys
            return h in changed_hours

        stale_ids = [pk for key, (pk, _, _) in existing.items() if key not in desired and in_region(*key)]
        upserts = [
            (election_id, c, h, kind, w, d, now)
            for (c, h, kind), (w, d) in desired.items()
            if existing.get((c, h, kind), (None, None, None))[1:] != (w, d)
        ]
        kinds_after = Counter(
            (c, h) for (c, h, kind) in existing if (c, h, kind) in desired or not in_region(c, h, kind)
        )
        kinds_after.update((c, h) for (c, h, kind) in desired if (c, h, kind) not in existing)

        hourly_rows = _hourly_rows_to_write(election_id, plan, voters, kinds_after, now)
        # Peers outside ``touched`` only had their spike re-judged: their other anomalies are
        # unchanged, so their count moves by exactly the spike that came or went.
        peer_updates, peers_rejudged = [], set()
        for pk, c, h, _, stored in peers_outside:
            if delta := _spike_delta(c, h, existing, desired):
                peer_updates.append((pk, stored + delta, now))
                peers_rejudged.add(c)

        _write(plan.deleted_ids, stale_ids, upserts, hourly_rows, peer_updates)
        result.rows_written = sum(map(len, hourly_rows)) + len(peer_updates)
        result.rows_deleted = len(plan.deleted_ids)
        result.anomalies_written = len(upserts)
        result.anomalies_deleted = len(stale_ids)
        # Episodes follow the anomalies just written: of the constituencies whose hours or
        # flags moved, from the earliest changed hour (docs/EPISODES.md).
        episodes_refresh(
            election_id=election_id,
            constituency_ids=None if scope.whole_election else touched | peers_rejudged | {u[1] for u in upserts},
            since=since,
            now=now,
        )

        refresh = touched | peers_rejudged
        if not scope.totals_by_delta:
            result.constituencies_refreshed = constituency_metrics_refresh(
                election_id=election_id,
                constituency_ids=None if scope.whole_election else refresh,
                voters=voters,
                now=now,
            )
        else:
            # Subtle: totals move by the recount's deltas instead of a SUM over every hour of
            # the touched constituencies (a third of a flush at 2,000 constituencies; bench,
            # issue 6). Exact because every write of hourly rows comes through here under the
            # election lock; the sweep re-checks totals against the rows, which a hand edit of
            # hourly rows would break.
            totals = {
                c: tuple(
                    stored + delta
                    for stored, delta in zip(stored_totals[c][1:], totals_delta.get(c, (0, 0, 0)), strict=False)
                )
                for c in refresh
            }
            result.constituencies_refreshed = _constituencies_write(election_id, totals, voters, now)
        transaction.on_commit(lambda: metrics_cache.invalidate_election(election_id))
    logger.debug("recompute election=%s %s", election_id, result)
    return result


def _recount(election: Election, scope: Scope) -> dict[tuple[int, datetime], tuple[int, int, int, int]]:
    outside = Q(timestamp__lt=election.starts_at) | Q(timestamp__gte=election.ends_at)
    rows = (
        Transaction.objects.filter(election_id=election.id)
        .filter(scope.q)
        .values("constituency_id", "hour")
        .annotate(
            # Counting a NOT NULL column of the covering index, not ``id``, keeps the scan
            # index-only (``kind`` and ``timestamp`` are included in tx_constituency_hour_cov).
            bulletins=Count("kind", filter=Q(kind=TransactionKind.BULLETIN_ISSUED)),
            votes=Count("kind", filter=Q(kind=TransactionKind.VOTE_CAST)),
            total=Count("kind"),
            outside=Count("kind", filter=outside),
        )
        .values_list("constituency_id", "hour", "bulletins", "votes", "total", "outside")
        .order_by()
    )
    return {(c, h): counts for c, h, *counts in rows}


def _load_series(election_id: int, scope: Scope, touched: set[int], since: datetime | None) -> _Plan:
    """The touched constituencies' stored hours from ``since`` (the earliest changed hour)
    on, and their cumulative counts before it: nothing earlier can change.

    Subtle: while an election runs, new data lands in the current hour, so a flush reads one
    row per touched constituency plus one SQL sum, not every hour of each (bench, issue 6).
    """
    plan = _Plan(since=since)
    if not touched:
        return plan
    rows = HourlyStats.objects.filter(election_id=election_id)
    if not scope.all_constituencies:
        rows = rows.filter(constituency_id__in=sorted(touched))
    if since is not None:
        plan.prefix = {
            c: (v, b)
            for c, v, b in rows.filter(hour__lt=since)
            .values("constituency_id")
            .annotate(v=Sum("votes_cast"), b=Sum("bulletins_issued"))
            .values_list("constituency_id", "v", "b")
            .order_by()
        }
        rows = rows.filter(hour__gte=since)
    for pk, c, h, b, v, t, bv, vv, rate, n in rows.values_list(
        "id", "constituency_id", "hour", *HOURLY_FIELDS[:-1]
    ).order_by():
        if c in touched:
            plan.series[c][h] = _Row(pk, b, v, t, bv, vv, rate, n)
    return plan


def _load_other_peers(election_id: int, scope: Scope, touched: set[int], hours: set[datetime]) -> list[tuple]:
    """Rows of untouched constituencies in the touched hours: the peers a spike is judged against.

    Subtle: each row's hour comes back as its position in ``hours``, not as a timestamp:
    decoding thousands of timestamptz values into aware datetimes was a fifth of a
    one-bucket flush (bench, issue 6)."""
    if not hours:
        return []
    hours = sorted(hours)
    slot = Case(*(When(hour=h, then=Value(i)) for i, h in enumerate(hours)), output_field=IntegerField())
    rows = (
        HourlyStats.objects.filter(election_id=election_id, hour__in=hours)
        .exclude(constituency_id__in=sorted(touched))
        .annotate(slot=slot)
        .values_list("id", "constituency_id", "slot", "votes_cast", "anomaly_count")
        .order_by()
    )
    return [(pk, c, hours[i], votes, n) for pk, c, i, votes, n in rows]


def _constituency_rows(election_id: int, scope: Scope, ids: set[int]) -> dict[int, tuple[int, int, int, int]]:
    """At least the given constituencies' (registered voters, stored total bulletins, votes,
    transactions). Spike peers make ``ids`` most of the election, and an IN list of thousands
    of ids cost half of a one-bucket flush (bench, issue 6): past IN_LIST_MAX, the election's
    rows by its index are cheaper."""
    rows = Constituency.objects.filter(election_id=election_id)
    if not scope.whole_election and len(ids) <= IN_LIST_MAX:
        rows = rows.filter(id__in=sorted(ids))
    return {
        c: (voters, b, v, t)
        for c, voters, b, v, t in rows.values_list(
            "id", "registered_voters", "total_bulletins_issued", "total_votes_cast", "total_transactions"
        ).order_by()
    }


def _delta_add(delta: list[int], row: "_Row", *, sign: int) -> None:
    delta[0] += sign * row.bulletins
    delta[1] += sign * row.votes
    delta[2] += sign * row.total


def _desired_anomalies(plan, voters, counts, changed_hours, peers_outside) -> dict[tuple, tuple[float, dict]]:
    desired: dict[tuple, tuple[float, dict]] = {}
    peers: dict[datetime, dict[int, tuple[int, int]]] = {h: {} for h in changed_hours}

    for c, hours in plan.series.items():
        cum_votes, cum_bulletins = plan.prefix.get(c, (0, 0))
        for h in sorted(hours):
            row = hours[h]
            cum_votes += row.votes
            cum_bulletins += row.bulletins
            details = anomalies.turnout_over_100(cumulative_votes=cum_votes, registered_voters=voters[c])
            if details:
                desired[(c, h, AnomalyKind.TURNOUT_OVER_100)] = (
                    anomalies.weight(AnomalyKind.TURNOUT_OVER_100),
                    details,
                )
            details = anomalies.votes_exceed_bulletins(cumulative_votes=cum_votes, cumulative_bulletins=cum_bulletins)
            if details:
                kind = AnomalyKind.VOTES_EXCEED_BULLETINS
                desired[(c, h, kind)] = (anomalies.weight(kind), details)
            if h in peers:
                peers[h][c] = (row.votes, voters[c])

    for (c, h), (_, _, _, outside) in counts.items():
        details = anomalies.outside_voting_window(transactions_outside=outside)
        if details:
            kind = AnomalyKind.OUTSIDE_VOTING_WINDOW
            desired[(c, h, kind)] = (anomalies.weight(kind), details)

    for _, c, h, votes, _ in peers_outside:
        peers[h][c] = (votes, voters[c])
    spike_weight = anomalies.weight(AnomalyKind.VELOCITY_SPIKE)
    for h, hour_peers in peers.items():
        for c, details in anomalies.velocity_spikes(hour_peers).items():
            desired[(c, h, AnomalyKind.VELOCITY_SPIKE)] = (spike_weight, details)
    return desired


def _existing_anomalies(election_id, scope, touched, changed_hours, since) -> dict[tuple, tuple[int, float, dict]]:
    rows = Anomaly.objects.filter(election_id=election_id)
    if not scope.whole_election:
        region = Q(kind=AnomalyKind.VELOCITY_SPIKE, hour__in=sorted(changed_hours))
        if touched:
            own = Q(constituency_id__in=sorted(touched))
            region |= own if since is None else own & Q(hour__gte=since)
        rows = rows.filter(region)
    return {
        (c, h, kind): (pk, w, d)
        for pk, c, h, kind, w, d in rows.values_list(
            "id", "constituency_id", "hour", "kind", "weight", "details"
        ).order_by()
    }


def _spike_delta(c, h, existing, desired) -> int:
    key = (c, h, AnomalyKind.VELOCITY_SPIKE)
    return (key in desired) - (key in existing)


def _hourly_rows_to_write(election_id, plan, voters, kinds_after, now) -> tuple[list[tuple], list[tuple]]:
    """The rows whose figures were recounted or moved, new and stored (HOURLY_ROW_FIELDS)."""
    new, stored = [], []
    for c, hours in plan.series.items():
        cum_votes = plan.prefix.get(c, (0, 0))[0]
        for h in sorted(hours):
            row = hours[h]
            cum_votes += row.votes
            rate = 100.0 * cum_votes / voters[c]
            n = kinds_after[(c, h)]
            figures = (row.bulletins, row.votes, row.total, row.bulletin_velocity, row.vote_velocity, rate, n, now)
            if row.id is None:
                new.append((election_id, c, h, *figures))
            elif row.recounted or rate != row.rate or n != row.anomaly_count:
                stored.append((election_id, c, h, *figures))
    return new, stored


def _write(deleted_ids, stale_anomaly_ids, anomaly_upserts, hourly_rows, peer_updates) -> None:
    for start in range(0, len(deleted_ids), WRITE_BATCH):
        HourlyStats.objects.filter(id__in=deleted_ids[start : start + WRITE_BATCH]).delete()
    for start in range(0, len(stale_anomaly_ids), WRITE_BATCH):
        Anomaly.objects.filter(id__in=stale_anomaly_ids[start : start + WRITE_BATCH]).delete()
    # Subtle: plain inserts are safe because only a recompute writes hourly rows, under the
    # election lock, and it loaded every stored row it recounts: a row it did not find is new.
    # Stored rows go through the upsert, which finds them by the unique index: an UPDATE
    # joined to the arrays planned as a scan of the whole table (2,000 rows: 226 ms vs 60 ms).
    new, stored = hourly_rows
    rows_insert(HourlyStats, HOURLY_ROW_FIELDS, new)
    rows_upsert(HourlyStats, HOURLY_ROW_FIELDS, stored, unique=["constituency", "hour"])
    rows_update(HourlyStats, ["anomaly_count", "timestamp"], peer_updates)
    # An anomaly that persists keeps its first detected_at.
    rows_upsert(Anomaly, ANOMALY_UPSERT_FIELDS, anomaly_upserts, unique=["constituency", "hour", "kind"],
                update=["weight", "details"])  # fmt: skip


def constituency_metrics_refresh(
    *, election_id: int, constituency_ids: set[int] | None, voters: dict[int, int] | None = None, now=None
) -> int:
    """Recount the constituencies' totals from all their stored hourly rows, then write them
    with participation and anomaly score (the whole election, or a repair)."""
    now = now or timezone.now()
    constituencies = Constituency.objects.filter(election_id=election_id)
    stats = HourlyStats.objects.filter(election_id=election_id)
    if constituency_ids is not None:
        if not constituency_ids:
            return 0
        constituencies = constituencies.filter(id__in=sorted(constituency_ids))
        stats = stats.filter(constituency_id__in=sorted(constituency_ids))
    ids = None if constituency_ids is None else set(constituency_ids)
    if voters is None or (ids is not None and not ids <= voters.keys()):
        voters = dict(constituencies.values_list("id", "registered_voters"))
    summed = {
        c: (b, v, t)
        for c, b, v, t in stats.values("constituency_id")
        .annotate(b=Sum("bulletins_issued"), v=Sum("votes_cast"), t=Sum("transaction_count"))
        .values_list("constituency_id", "b", "v", "t")
        .order_by()
    }
    totals = {c: summed.get(c, (0, 0, 0)) for c in (voters if ids is None else ids)}
    return _constituencies_write(election_id, totals, voters, now)


def _constituencies_write(election_id: int, totals: dict[int, tuple[int, int, int]], voters, now) -> int:
    """Write each constituency's given (bulletins, votes, transactions) totals, with its
    participation, its anomaly count from the stored anomalies and its score from the
    stored episodes (SPEC section 4, "Episodes and the score")."""
    if not totals:
        return 0
    found, episodes = Anomaly.objects.filter(election_id=election_id), Episode.objects.filter(election_id=election_id)
    if len(totals) <= IN_LIST_MAX:
        found = found.filter(constituency_id__in=sorted(totals))
        episodes = episodes.filter(constituency_id__in=sorted(totals))
    counted = dict(
        found.values("constituency_id").annotate(n=Count("id")).values_list("constituency_id", "n").order_by()
    )
    weights = dict(
        episodes.values("constituency_id").annotate(w=Sum("weight")).values_list("constituency_id", "w").order_by()
    )
    updates = []
    for c, (bulletins, votes, count) in totals.items():
        n, w = counted.get(c, 0), weights.get(c, 0.0)
        figures = {
            "total_bulletins_issued": bulletins,
            "total_votes_cast": votes,
            "total_transactions": count,
            "total_anomalies": n,
            "participation_rate": 100.0 * votes / voters[c],
            "anomaly_score": anomalies.anomaly_score(w),
            "metrics_updated_at": now,
        }
        updates.append((c, *(figures[name] for name in CONSTITUENCY_FIELDS)))
    rows_update(Constituency, CONSTITUENCY_FIELDS, updates)
    return len(updates)


def rows_update(model, fields: list[str], rows: list[tuple]) -> None:
    """Set ``fields`` by primary key: ``rows`` are (pk, *values in ``fields`` order), set-based.

    On PostgreSQL one ``UPDATE ... FROM unnest(arrays)`` per batch, linear in the rows.
    Django's bulk_update writes a CASE with one WHEN per row for every field, which
    PostgreSQL evaluates branch by branch for every row: quadratic per batch (2,000
    constituencies took 17 s against 0.16 s; see docs/PERFORMANCE.md, item 3)."""
    if not rows:
        return
    pk = model._meta.pk
    columns = [pk, *(model._meta.get_field(name) for name in fields)]
    if connection.vendor != "postgresql":
        model.objects.bulk_update(_objects(model, columns, rows), fields, batch_size=500)
        return
    quote = connection.ops.quote_name
    names = ", ".join(quote(column.column) for column in columns)
    assignments = ", ".join(f"{quote(column.column)} = v.{quote(column.column)}" for column in columns[1:])
    sql = (
        f"UPDATE {quote(model._meta.db_table)} AS t SET {assignments} FROM unnest({_arrays_sql(columns)}) "
        f"AS v({names}) WHERE t.{quote(pk.column)} = v.{quote(pk.column)}"
    )
    with connection.cursor() as cursor:
        for start in range(0, len(rows), UPSERT_BATCH):
            cursor.execute(sql, _arrays(columns, rows[start : start + UPSERT_BATCH]))


def rows_insert(model, fields: list[str], rows: list[tuple]) -> None:
    """Insert ``rows`` (tuples of plain values in ``fields`` order) that do not exist yet.

    On PostgreSQL a binary COPY straight into the table: psycopg packs the values in C,
    where binding them as arrays builds every element in Python (111,000 hourly rows of a
    full recompute: 1.8 s against 6 s; bench, issue 6)."""
    if not rows:
        return
    columns = [model._meta.get_field(name) for name in fields]
    if connection.vendor != "postgresql":
        model.objects.bulk_create(
            _objects(model, columns, rows),
            batch_size=WRITE_BATCH,
        )
        return
    with connection.cursor() as cursor, connection.wrap_database_errors:
        _copy_rows(cursor, connection.ops.quote_name(model._meta.db_table), columns, rows)


def _copy_rows(cursor, table: str, columns, rows: list[tuple]) -> None:
    names = ", ".join(connection.ops.quote_name(column.column) for column in columns)
    with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([column.db_type(connection).split("(")[0] for column in columns])
        write_row = copy.write_row
        for row in rows:
            write_row(row)


def rows_upsert(model, fields: list[str], rows: list[tuple], *, unique: list[str], update: list[str] = ()) -> None:
    """Insert ``rows`` (tuples in ``fields`` order); on a conflict of ``unique`` set the
    ``update`` fields (default: all the others) of the stored row instead.

    On PostgreSQL one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per batch, straight
    from the tuples, not one model object and one parameter per value: from arrays for a
    few rows, from a binary COPY into a temporary table for many (a re-run of a full
    recompute rewrites every row: arrays built in Python cost 3x the COPY; bench, issue 6)."""
    if not rows:
        return
    columns = [model._meta.get_field(name) for name in fields]
    updated = [column for column in columns if (column.name in update if update else column.name not in unique)]
    if connection.vendor != "postgresql":
        model.objects.bulk_create(
            _objects(model, columns, rows),
            batch_size=WRITE_BATCH,
            update_conflicts=True,
            unique_fields=unique,
            update_fields=[column.name for column in updated],
        )
        return
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    names = ", ".join(quote(column.column) for column in columns)
    on_conflict = (
        f"ON CONFLICT ({', '.join(quote(model._meta.get_field(name).column) for name in unique)}) DO UPDATE SET "
        + ", ".join(f"{quote(column.column)} = EXCLUDED.{quote(column.column)}" for column in updated)
    )
    with connection.cursor() as cursor, connection.wrap_database_errors:
        if len(rows) >= STAGE_MIN_ROWS and all(isinstance(column, _PLAIN_FIELDS) for column in columns):
            stage = quote(f"{model._meta.db_table}_stage")
            cursor.execute(f"CREATE TEMPORARY TABLE {stage} ON COMMIT DROP AS SELECT {names} FROM {table} WITH NO DATA")
            _copy_rows(cursor, stage, columns, rows)
            cursor.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} {on_conflict}")
            cursor.execute(f"DROP TABLE {stage}")
            return
        sql = f"INSERT INTO {table} ({names}) SELECT * FROM unnest({_arrays_sql(columns)}) {on_conflict}"
        for start in range(0, len(rows), UPSERT_BATCH):
            cursor.execute(sql, _arrays(columns, rows[start : start + UPSERT_BATCH]))


# Values the driver adapts as they are; anything else (JSON, say) goes through the field.
_PLAIN_FIELDS = (models.IntegerField, models.FloatField, models.DateTimeField, models.ForeignKey, models.CharField)


def _objects(model, columns, rows: list[tuple]) -> list:
    """Model instances of the rows, for the ORM's bulk paths on SQLite."""
    return [model(**{column.attname: value for column, value in zip(columns, row, strict=False)}) for row in rows]


def _arrays_sql(columns) -> str:
    return ", ".join(f"%s::{column.db_type(connection)}[]" for column in columns)


def _arrays(columns, rows: list[tuple]) -> list[list]:
    """One array per column: ``unnest`` turns them back into rows."""
    arrays = [list(values) for values in zip(*rows, strict=False)]
    for i, column in enumerate(columns):
        if not isinstance(column, _PLAIN_FIELDS):
            arrays[i] = [column.get_db_prep_save(value, connection) for value in arrays[i]]
    return arrays


def current_hours(election: Election, now: datetime) -> list[datetime]:
    """The current local hour and the one before: their velocities depend on the clock."""
    current = hour_bucket(now, election.tz)
    return [current - HOUR, current]
