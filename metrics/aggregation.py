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
from typing import NamedTuple

import numpy as np
from django.db import transaction
from django.db.models import Case, Count, F, FloatField, IntegerField, Q, Sum, Value, When
from django.utils import timezone

from election_monitor import bulk_sql
from elections.models import CONSTITUENCY_METRIC_FIELDS, Constituency, Election, Transaction, TransactionKind
from elections.timebuckets import HOUR, hour_bucket
from metrics import anomalies
from metrics.cache import metrics_cache
from metrics.episodes import episodes_refresh
from metrics.models import HOURLY_COMPUTED_FIELDS, Anomaly, AnomalyKind, Episode, HourlyStats
from protocols.models import ProtocolResult

logger = logging.getLogger(__name__)

DELETE_BATCH = 2000  # ids per DELETE ... IN statement
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
    # A part of a parallel recompute (metrics/parallel.py): every hour of the constituencies
    # with ids in [first, last], peer-judged spikes left to the run's pass over whole hours.
    span: tuple[int, int] | None = None

    @classmethod
    def election(cls, *, since: datetime | None = None, until: datetime | None = None) -> "Scope":
        q = _hour_range(since, until)
        return cls(q=q, all_constituencies=True, whole_election=since is None and until is None)

    @classmethod
    def constituencies(cls, ids, *, since: datetime | None = None, until: datetime | None = None) -> "Scope":
        return cls(q=Q(constituency_id__in=sorted(set(ids))) & _hour_range(since, until))

    @classmethod
    def constituency_span(cls, first: int, last: int) -> "Scope":
        return cls(q=Q(constituency_id__gte=first, constituency_id__lte=last), span=(first, last))

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
            q |= bulk_sql.pairs_in(pairs)
        return cls(q=q, totals_by_delta=totals_by_delta)


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


class BucketCount(NamedTuple):
    """One bucket's recount from its transactions."""

    bulletins: int
    votes: int
    total: int
    outside: int  # transactions timestamped outside the voting window


class StoredTotals(NamedTuple):
    """A constituency's registered voters and its totals as stored before this recompute."""

    voters: int
    bulletins: int
    votes: int
    transactions: int


class HourPeers(NamedTuple):
    """The hourly rows of one hour whose spikes are judged (those of constituencies outside
    a recount, or all of them), as parallel integer arrays: a national hour has 96,325 of
    them, and a Python object per row was most of a one-transaction flush
    (docs/PERFORMANCE.md, "National scale")."""

    constituency_ids: np.ndarray
    votes: np.ndarray
    voters: np.ndarray  # the constituencies' registered voters


AnomalyKey = tuple[int, datetime, str]  # (constituency_id, hour, kind)


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
        # The parts of a parallel recompute write disjoint constituencies and judge no
        # peers: they share the lock with each other, and still exclude every other recompute.
        if scope.span is None:
            election = Election.objects.select_for_update(no_key=True).get(pk=election_id)
        else:
            election = bulk_sql.row_lock_shared(Election, election_id)

        counts = _recount(election=election, scope=scope)
        stored_in_scope = {
            (constituency_id, hour): pk
            for pk, constituency_id, hour in bulk_sql.rows_fetch(
                HourlyStats.objects.filter(election_id=election_id)
                .filter(scope.q)
                .values_list("id", "constituency_id", "hour")
                .order_by()
            )
        }
        scope_keys = counts.keys() | stored_in_scope.keys()
        touched = {constituency_id for constituency_id, _ in scope_keys}
        changed_hours = {hour for _, hour in scope_keys}
        result.buckets_recounted = len(scope_keys)

        # The hours whose velocity spikes this recompute judges against their peers.
        judged_hours = set() if scope.span else changed_hours
        since = None if scope.whole_election or scope.span or not changed_hours else min(changed_hours)
        plan = _load_series(election_id=election_id, scope=scope, touched=touched, since=since)
        # A whole-election scope touches every constituency with a row: no peer is outside it,
        # and excluding tens of thousands of touched ids is the costliest query of a national
        # recompute (docs/PERFORMANCE.md).
        peers_outside = hour_peers_load(
            election_id=election_id, touched=touched, hours=set() if scope.whole_election else judged_hours
        )
        stored_totals = _constituency_rows(election_id=election_id, scope=scope, ids=touched)
        voters = {constituency_id: stored.voters for constituency_id, stored in stored_totals.items()}

        # What the recount moves each constituency's totals by: new minus stored figures.
        totals_delta: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        for (constituency_id, hour), pk in stored_in_scope.items():
            if (constituency_id, hour) not in counts:
                plan.deleted_ids.append(pk)
                gone = plan.series[constituency_id].pop(hour)
                _delta_add(totals_delta[constituency_id], gone, sign=-1)
        minutes_in = {
            hour: velocity_minutes(hour, starts_at=election.starts_at, ends_at=election.ends_at, now=now)
            for hour in changed_hours
        }
        # Once per bucket: a full recompute runs this 100,000 times (docs/PERFORMANCE.md).
        series, by_delta = plan.series, scope.totals_by_delta
        for (constituency_id, hour), count in counts.items():
            bulletins, votes, total, outside = count
            minutes = minutes_in[hour]
            hours = series[constituency_id]
            row = hours.get(hour)
            if row is None:
                row = hours[hour] = _Row(
                    None, bulletins, votes, total, bulletins / minutes, votes / minutes, 0.0, 0, True, outside
                )
            else:
                if by_delta:
                    _delta_add(totals_delta[constituency_id], row, sign=-1)
                row.bulletins, row.votes, row.total, row.outside = count
                row.bulletin_velocity = bulletins / minutes
                row.vote_velocity = votes / minutes
                row.recounted = True
            if by_delta:
                _delta_add(totals_delta[constituency_id], row, sign=1)

        desired = _desired_anomalies(
            plan=plan, voters=voters, counts=counts, changed_hours=judged_hours, peers_outside=peers_outside
        )
        desired.update(_protocol_mismatches(election_id=election_id, plan=plan, touched=touched))
        existing = _existing_anomalies(
            election_id=election_id, scope=scope, touched=touched, changed_hours=judged_hours, since=since
        )

        def in_region(key: AnomalyKey) -> bool:
            """Whether this recompute judged the anomaly ``key``: only then may it remove it."""
            constituency_id, hour, kind = key
            if scope.whole_election:
                return True
            if kind == AnomalyKind.VELOCITY_SPIKE:
                return hour in judged_hours
            if kind == AnomalyKind.STREAM_PROTOCOL_MISMATCH:
                return constituency_id in touched
            if scope.span:
                return scope.span[0] <= constituency_id <= scope.span[1]
            if kind in anomalies.CUMULATIVE_KINDS:
                return constituency_id in touched and (since is None or hour >= since)
            return (constituency_id, hour) in scope_keys

        stale_ids = [stored.id for key, stored in existing.items() if key not in desired and in_region(key)]
        upserts = [
            (election_id, constituency_id, hour, kind, weight, details, now)
            for (constituency_id, hour, kind), (weight, details) in desired.items()
            if (stored := existing.get((constituency_id, hour, kind))) is None
            or (stored.weight, stored.details) != (weight, details)
        ]
        kinds_after = Counter(key[:2] for key in existing if key in desired or not in_region(key))
        kinds_after.update(key[:2] for key in desired if key not in existing)

        hourly_rows = _hourly_rows_to_write(
            election_id=election_id, plan=plan, voters=voters, kinds_after=kinds_after, now=now
        )
        peer_updates, peers_rejudged = _peer_updates(
            election_id=election_id,
            touched=touched,
            peers_outside=peers_outside,
            desired=desired,
            existing=existing,
            voters=voters,
            now=now,
        )

        _write(
            deleted_ids=plan.deleted_ids,
            stale_anomaly_ids=stale_ids,
            anomaly_upserts=upserts,
            hourly_rows=hourly_rows,
            peer_updates=peer_updates,
        )
        result.rows_written = sum(map(len, hourly_rows)) + len(peer_updates)
        result.rows_deleted = len(plan.deleted_ids)
        result.anomalies_written = len(upserts)
        result.anomalies_deleted = len(stale_ids)
        # Episodes follow the anomalies just written: re-derived where flags or hours with data
        # moved, from the earliest changed hour; only their peaks where nothing but a flag's
        # details did. A flush that only adds to a clean bucket has neither
        # (docs/METRICS.md#how-episodes-are-kept-current). A spike's details carry its hour's
        # median, MAD and peer count, so a new peer rewrites every spike of the hour; only a
        # flag whose magnitude moved can move a peak.
        magnitude_changes = defaultdict(list)
        for key, (weight, details) in desired.items():
            if (
                (stored := existing.get(key)) is not None
                and stored.details != details
                and stored.weight == weight
                and anomalies.magnitude(key[2], stored.details) != anomalies.magnitude(key[2], details)
            ):
                magnitude_changes[key[0]].append((key[1], key[2], stored.details, details))
        episodes_refresh(
            election_id=election_id,
            constituency_ids=None
            if scope.whole_election
            else {
                *(key[0] for key in desired.keys() - existing.keys()),
                *(key[0] for key, stored in existing.items() if key in desired and stored.weight != desired[key][0]),
                *(key[0] for key in existing if key not in desired and in_region(key)),
                *(row[1] for row in hourly_rows[0]),
                *(c for c, _ in stored_in_scope.keys() - counts.keys()),
            },
            since=since,
            now=now,
            magnitude_changes=magnitude_changes,
            # After the writes above, the planned series are every hour with data.
            election_hours=plan.series if scope.whole_election else None,
        )

        refresh = touched | peers_rejudged
        if scope.totals_by_delta and peers_rejudged - stored_totals.keys():
            stored_totals.update(
                _constituency_rows(election_id=election_id, scope=scope, ids=peers_rejudged - stored_totals.keys())
            )
        if scope.whole_election:
            # The plan holds every hourly row of the election as just written: their sums are
            # the totals, without reading the rows back (docs/PERFORMANCE.md, full recompute).
            totals = dict.fromkeys(voters, (0, 0, 0))
            for constituency_id, hours in plan.series.items():
                rows = hours.values()
                totals[constituency_id] = (
                    sum(row.bulletins for row in rows),
                    sum(row.votes for row in rows),
                    sum(row.total for row in rows),
                )
            result.constituencies_refreshed = _constituencies_write(election_id, totals, voters, now)
        elif not scope.totals_by_delta:
            result.constituencies_refreshed = constituency_metrics_refresh(
                election_id=election_id,
                constituency_ids=refresh,
                voters=voters,
                now=now,
            )
        else:
            # Subtle: totals move by the recount's deltas instead of a SUM over every hour of
            # the touched constituencies (docs/PERFORMANCE.md, incremental recompute). Exact
            # because every write of hourly rows comes through here under the election lock;
            # the sweep re-checks totals against the rows, which a hand edit would break.
            totals = {}
            for constituency_id in refresh:
                stored = stored_totals[constituency_id]
                bulletins, votes, transactions = totals_delta.get(constituency_id, (0, 0, 0))
                totals[constituency_id] = (
                    stored.bulletins + bulletins,
                    stored.votes + votes,
                    stored.transactions + transactions,
                )
            result.constituencies_refreshed = _constituencies_write(election_id, totals, voters, now)
        metrics_cache.election_version_bump(election_id)
    logger.debug("recompute election=%s %s", election_id, result)
    return result


def _recount(*, election: Election, scope: Scope) -> dict[tuple[int, datetime], BucketCount]:
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
    new = tuple.__new__  # BucketCount without its keyword-checking constructor, per bucket
    return {(c, h): new(BucketCount, (b, v, t, o)) for c, h, b, v, t, o in bulk_sql.rows_fetch(rows)}


def _load_series(*, election_id: int, scope: Scope, touched: set[int], since: datetime | None) -> _Plan:
    """The touched constituencies' stored hours from ``since`` (the earliest changed hour)
    on, and their cumulative counts before it: nothing earlier can change.

    Subtle: while an election runs, new data lands in the current hour, so a flush reads one
    row per touched constituency plus one SQL sum, not every hour of each.
    """
    plan = _Plan(since=since)
    if not touched:
        return plan
    rows = HourlyStats.objects.filter(election_id=election_id)
    if scope.span:
        rows = rows.filter(scope.q)
    elif not scope.all_constituencies:
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
    for pk, c, h, b, v, t, bv, vv, rate, n in bulk_sql.rows_fetch(
        rows.values_list("id", "constituency_id", "hour", *HOURLY_FIELDS[:-1]).order_by()
    ):
        if c in touched:
            plan.series[c][h] = _Row(pk, b, v, t, bv, vv, rate, n)
    return plan


def hour_peers_load(*, election_id: int, touched: set[int], hours: set[datetime]) -> dict[datetime, HourPeers]:
    """Rows of constituencies not in ``touched`` in the given hours: the peers a spike is
    judged against (every row of the hour with ``touched`` empty).

    Subtle: one read of plain integers (bulk_sql.int_rows), each row's hour as its position
    in ``hours``, answered from two indexes alone (hourly_stats_hour_peers,
    constituency_voters): the table's rows of one hour lie on as many pages as it has rows,
    and decoding them into Python objects cost more than the query (docs/PERFORMANCE.md,
    "National scale")."""
    if not hours:
        return {}
    hours = sorted(hours)
    slot = Case(*(When(hour=h, then=Value(i)) for i, h in enumerate(hours)), output_field=IntegerField())
    rows = bulk_sql.int_rows(
        HourlyStats.objects.filter(election_id=election_id, hour__in=hours, constituency__election_id=election_id)
        .annotate(slot=slot if len(hours) > 1 else Value(0, output_field=IntegerField()))
        .values_list("slot", "constituency_id", "votes_cast", "constituency__registered_voters")
        .order_by()
    )
    rows = rows[~np.isin(rows[:, 1], np.fromiter(touched, dtype=np.int64, count=len(touched)))]
    return {h: HourPeers(*rows[rows[:, 0] == i, 1:].T) for i, h in enumerate(hours)}


def _peer_updates(
    *,
    election_id: int,
    touched: set[int],
    peers_outside: dict[datetime, HourPeers],
    desired: dict,
    existing: dict,
    voters: dict[int, int],
    now: datetime,
) -> tuple[list[tuple], set[int]]:
    """The anomaly counts of peers outside ``touched`` whose spike came or went, and those
    peers (their registered voters added to ``voters``). Their other anomalies are unchanged,
    so their count moves by exactly that spike: only those few rows are read again, by key."""
    if not peers_outside:
        return [], set()
    moved: dict[tuple[int, datetime], int] = {}
    for c, h, kind in desired.keys() ^ existing.keys():
        if kind == AnomalyKind.VELOCITY_SPIKE and h in peers_outside and c not in touched:
            moved[(c, h)] = 1 if (c, h, kind) in desired else -1
    if not moved:
        return [], set()
    rows = (
        HourlyStats.objects.filter(election_id=election_id)
        .filter(bulk_sql.pairs_in(sorted(moved)))
        .values_list("id", "constituency_id", "hour", "anomaly_count")
        .order_by()
    )
    updates, rejudged = [], set()
    for pk, c, h, count in rows:
        if (c, h) in moved:
            updates.append((pk, count + moved[(c, h)], now))
            rejudged.add(c)
    for peers in peers_outside.values():
        for i in np.flatnonzero(np.isin(peers.constituency_ids, list(rejudged))).tolist():
            voters[int(peers.constituency_ids[i])] = int(peers.voters[i])
    return updates, rejudged


def _constituency_rows(*, election_id: int, scope: Scope, ids: set[int]) -> dict[int, StoredTotals]:
    """The given constituencies' stored totals (every one of a whole-election scope).

    Subtle: only the recounted ones, found by one array parameter: the spike peers bring
    their registered voters with their rows, and reading all of a 96,000-constituency
    election per flush was most of a national flush (docs/PERFORMANCE.md)."""
    fields = ["registered_voters", "total_bulletins_issued", "total_votes_cast", "total_transactions"]
    if scope.whole_election:
        rows = Constituency.objects.filter(election_id=election_id).values_list("id", *fields).order_by()
        return {pk: StoredTotals(*stored) for pk, *stored in rows}
    return {pk: StoredTotals(*stored) for pk, stored in bulk_sql.rows_by_ids(Constituency, ids, fields).items()}


def _delta_add(delta: list[int], row: "_Row", *, sign: int) -> None:
    delta[0] += sign * row.bulletins
    delta[1] += sign * row.votes
    delta[2] += sign * row.total


def _desired_anomalies(
    *,
    plan: _Plan,
    voters: dict[int, int],
    counts: dict[tuple[int, datetime], BucketCount],
    changed_hours: set[datetime],
    peers_outside: dict[datetime, HourPeers],
) -> dict[AnomalyKey, tuple[float, dict]]:
    """Every anomaly the rules find in the planned rows (docs/METRICS.md#anomaly-rules)."""
    desired: dict[tuple, tuple[float, dict]] = {}
    peers: dict[datetime, dict[int, tuple[int, int]]] = {h: {} for h in changed_hours}

    turnout_over_100, votes_exceed_bulletins = anomalies.turnout_over_100, anomalies.votes_exceed_bulletins
    for c, hours in plan.series.items():
        cum_votes, cum_bulletins = plan.prefix.get(c, (0, 0))
        registered = voters[c]
        for h in sorted(hours):
            row = hours[h]
            cum_votes += row.votes
            cum_bulletins += row.bulletins
            details = turnout_over_100(cumulative_votes=cum_votes, registered_voters=registered)
            if details:
                desired[(c, h, AnomalyKind.TURNOUT_OVER_100)] = (
                    anomalies.weight(AnomalyKind.TURNOUT_OVER_100),
                    details,
                )
            details = votes_exceed_bulletins(cumulative_votes=cum_votes, cumulative_bulletins=cum_bulletins)
            if details:
                kind = AnomalyKind.VOTES_EXCEED_BULLETINS
                desired[(c, h, kind)] = (anomalies.weight(kind), details)
            if (hour_peers := peers.get(h)) is not None:
                hour_peers[c] = (row.votes, registered)

    for (c, h), count in counts.items():
        details = anomalies.outside_voting_window(transactions_outside=count.outside)
        if details:
            kind = AnomalyKind.OUTSIDE_VOTING_WINDOW
            desired[(c, h, kind)] = (anomalies.weight(kind), details)

    spike_weight = anomalies.weight(AnomalyKind.VELOCITY_SPIKE)
    for h, hour_peers in peers.items():
        if (outside := peers_outside.get(h)) is None:
            spikes = anomalies.velocity_spikes(hour_peers)
        else:
            spikes = anomalies.hour_spikes(
                np.concatenate([_ints(hour_peers), outside.constituency_ids]),
                np.concatenate([_ints(votes for votes, _ in hour_peers.values()), outside.votes]),
                np.concatenate([_ints(n for _, n in hour_peers.values()), outside.voters]),
            )
        for c, details in spikes.items():
            desired[(c, h, AnomalyKind.VELOCITY_SPIKE)] = (spike_weight, details)
    return desired


def _ints(values) -> np.ndarray:
    return np.fromiter(values, dtype=np.int64)


class StoredAnomaly(NamedTuple):
    id: int
    weight: float
    details: dict


def _protocol_mismatches(*, election_id: int, plan: "_Plan", touched: set[int]) -> dict[AnomalyKey, tuple]:
    """``stream_protocol_mismatch`` of the touched constituencies that have a protocol: at the
    constituency's last hour with data, when its stream's votes and its protocol's ballots
    disagree (docs/METRICS.md#stream_protocol_mismatch). One query for the protocols."""
    if not touched:
        return {}
    ballots = dict(
        ProtocolResult.objects.filter(election_id=election_id, constituency_id__in=sorted(touched))
        .annotate(ballots=F("valid") + F("invalid"))
        .values_list("constituency_id", "ballots")
    )
    found = {}
    for constituency_id, protocol_ballots in ballots.items():
        hours = plan.series.get(constituency_id)
        if not hours:
            last = (
                HourlyStats.objects.filter(constituency_id=constituency_id)
                .order_by("-hour")
                .values_list("hour", flat=True)
                .first()
            )
            if last is None:
                continue  # no stream at all: nothing to reconcile
        else:
            last = max(hours)
        votes = plan.prefix.get(constituency_id, (0, 0))[0] + sum(row.votes for row in (hours or {}).values())
        details = anomalies.stream_protocol_mismatch(votes_cast=votes, ballots_cast=protocol_ballots)
        if details:
            kind = AnomalyKind.STREAM_PROTOCOL_MISMATCH
            found[(constituency_id, last, kind)] = (anomalies.weight(kind), details)
    return found


def _existing_anomalies(
    *, election_id: int, scope: Scope, touched: set[int], changed_hours: set[datetime], since: datetime | None
) -> dict[AnomalyKey, StoredAnomaly]:
    """The stored anomalies this recompute may confirm, change or remove."""
    rows = Anomaly.objects.filter(election_id=election_id)
    if scope.span:
        rows = rows.filter(scope.q)
    elif not scope.whole_election:
        region = Q(kind=AnomalyKind.VELOCITY_SPIKE, hour__in=sorted(changed_hours))
        if touched:
            own = Q(constituency_id__in=sorted(touched))
            region |= own if since is None else own & Q(hour__gte=since)
            # At the constituency's last hour with data, which may lie before ``since``.
            region |= Q(kind=AnomalyKind.STREAM_PROTOCOL_MISMATCH, constituency_id__in=sorted(touched))
        rows = rows.filter(region)
    return {
        (constituency_id, hour, kind): StoredAnomaly(pk, weight, details)
        for pk, constituency_id, hour, kind, weight, details in rows.values_list(
            "id", "constituency_id", "hour", "kind", "weight", "details"
        ).order_by()
    }


def _hourly_rows_to_write(
    *, election_id: int, plan: _Plan, voters: dict[int, int], kinds_after: Counter, now: datetime
) -> tuple[list[tuple], list[tuple]]:
    """The rows whose figures were recounted or moved, new and stored (HOURLY_ROW_FIELDS)."""
    new, stored = [], []
    for c, hours in plan.series.items():
        cum_votes = plan.prefix.get(c, (0, 0))[0]
        registered = voters[c]
        for h in sorted(hours):
            row = hours[h]
            cum_votes += row.votes
            rate = 100.0 * cum_votes / registered
            n = kinds_after[(c, h)]
            figures = (row.bulletins, row.votes, row.total, row.bulletin_velocity, row.vote_velocity, rate, n, now)
            if row.id is None:
                new.append((election_id, c, h, *figures))
            elif row.recounted or rate != row.rate or n != row.anomaly_count:
                stored.append((election_id, c, h, *figures))
    return new, stored


def _write(
    *,
    deleted_ids: list[int],
    stale_anomaly_ids: list[int],
    anomaly_upserts: list[tuple],
    hourly_rows: tuple[list[tuple], list[tuple]],
    peer_updates: list[tuple],
) -> None:
    for start in range(0, len(deleted_ids), DELETE_BATCH):
        HourlyStats.objects.filter(id__in=deleted_ids[start : start + DELETE_BATCH]).delete()
    for start in range(0, len(stale_anomaly_ids), DELETE_BATCH):
        Anomaly.objects.filter(id__in=stale_anomaly_ids[start : start + DELETE_BATCH]).delete()
    # Subtle: plain inserts are safe because only a recompute writes hourly rows, under the
    # election lock, and it loaded every stored row it recounts: a row it did not find is new.
    # Stored rows go through the upsert, which finds them by the unique index: an UPDATE
    # joined to the arrays planned as a scan of the whole table.
    new, stored = hourly_rows
    bulk_sql.rows_insert(HourlyStats, HOURLY_ROW_FIELDS, new)
    bulk_sql.rows_upsert(HourlyStats, HOURLY_ROW_FIELDS, stored, unique=["constituency", "hour"])
    bulk_sql.rows_update(HourlyStats, ["anomaly_count", "timestamp"], peer_updates)
    # An anomaly that persists keeps its first detected_at.
    bulk_sql.rows_upsert(Anomaly, ANOMALY_UPSERT_FIELDS, anomaly_upserts, unique=["constituency", "hour", "kind"],
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
    written = _constituencies_write(election_id, totals, voters, now)
    metrics_cache.election_version_bump(election_id)
    return written


def _constituencies_write(election_id: int, totals: dict[int, tuple[int, int, int]], voters, now) -> int:
    """Write each constituency's given (bulletins, votes, transactions) totals, with its
    participation, its anomaly count from the stored anomalies and its score from the
    stored episodes (docs/METRICS.md#anomaly_score)."""
    if not totals:
        return 0
    found, episodes = Anomaly.objects.filter(election_id=election_id), Episode.objects.filter(election_id=election_id)
    if len(totals) <= IN_LIST_MAX:
        found = found.filter(constituency_id__in=sorted(totals))
        episodes = episodes.filter(constituency_id__in=sorted(totals))
    # One round trip: anomaly counts and episode weights as a UNION ALL of two aggregates.
    flagged: dict[int, list] = defaultdict(lambda: [0, 0.0])
    for c, n, w in (
        found.values("constituency_id")
        .annotate(n=Count("id"), w=Value(0.0, output_field=FloatField()))
        .values_list("constituency_id", "n", "w")
        .order_by()
        .union(
            episodes.values("constituency_id")
            .annotate(n=Value(0, output_field=IntegerField()), w=Sum("weight"))
            .values_list("constituency_id", "n", "w")
            .order_by(),
            all=True,
        )
    ):
        flagged[c][0] += n
        flagged[c][1] += w
    updates = []
    for c, (bulletins, votes, count) in totals.items():
        n, w = flagged.get(c, (0, 0.0))
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
    bulk_sql.rows_update(Constituency, CONSTITUENCY_FIELDS, updates)
    return len(updates)


def current_hours(election: Election, now: datetime) -> list[datetime]:
    """The current local hour and the one before: their velocities depend on the clock."""
    current = hour_bucket(now, election.tz)
    return [current - HOUR, current]
