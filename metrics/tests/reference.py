"""An independent, plain-Python reference of every metric in docs/METRICS.md.

Deliberately written without the product's code: no ORM, no elections.timebuckets, no
metrics.anomalies. Buckets are found by truncating the *local* time and converting back
with its fold, which is a different road to the same instants than the product takes.
"""

import math
import statistics
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

DEFAULT_WEIGHTS = {"turnout_over_100": 5, "votes_exceed_bulletins": 3, "velocity_spike": 2, "outside_voting_window": 1}
KINDS = ("turnout_over_100", "votes_exceed_bulletins", "velocity_spike", "outside_voting_window")


@dataclass
class RefElection:
    tz: str
    starts_at: datetime
    ends_at: datetime
    registered: dict[int, int]  # constituency id -> registered voters
    transactions: list[tuple[str, int, str, datetime]] = field(default_factory=list)  # hash, cid, kind, ts


@dataclass
class RefSettings:
    weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    k: float = 5.0
    min_votes: int = 20
    min_peers: int = 5


def bucket(ts: datetime, tz: str) -> datetime:
    """The local wall clock's hour, under the UTC offset in force at ``ts``.

    Subtle: not ``local.replace(minute=0)`` read back through the zone: where a DST change
    happens off the hour (St John's changed at 00:01 until 2011), that wall time lies in the
    gap and the zone resolves it with the other offset."""
    local = ts.astimezone(ZoneInfo(tz))
    fixed = timezone(local.utcoffset())
    return datetime(local.year, local.month, local.day, local.hour, tzinfo=fixed).astimezone(UTC)


def stored(election: RefElection) -> list[tuple[str, int, str, datetime]]:
    """What the database keeps: the first transaction per tx_hash."""
    seen, kept = set(), []
    for tx in election.transactions:
        if tx[0] not in seen:
            seen.add(tx[0])
            kept.append(tx)
    return kept


def compute(election: RefElection, now: datetime, cfg: RefSettings | None = None) -> dict:
    cfg = cfg or RefSettings()
    hourly: dict[tuple[int, datetime], dict] = {}
    for _, cid, kind, ts in stored(election):
        row = hourly.setdefault(
            (cid, bucket(ts, election.tz)),
            {"bulletins_issued": 0, "votes_cast": 0, "transaction_count": 0, "outside": 0},
        )
        row["transaction_count"] += 1
        if kind == "bulletin_issued":
            row["bulletins_issued"] += 1
        elif kind == "vote_cast":
            row["votes_cast"] += 1
        if ts < election.starts_at or ts >= election.ends_at:
            row["outside"] += 1

    anomalies: dict[tuple[int, datetime, str], float] = {}
    details: dict[tuple[int, datetime, str], dict] = {}
    for (cid, hour), row in hourly.items():
        lo = max(hour, election.starts_at)
        hi = min(hour + timedelta(hours=1), election.ends_at, now)
        minutes = max(1.0, (hi - lo).total_seconds() / 60) if hi > lo else 1.0
        row["bulletin_velocity"] = row["bulletins_issued"] / minutes
        row["vote_velocity"] = row["votes_cast"] / minutes
        votes_to_end = sum(r["votes_cast"] for (c, h), r in hourly.items() if c == cid and h <= hour)
        bulletins_to_end = sum(r["bulletins_issued"] for (c, h), r in hourly.items() if c == cid and h <= hour)
        voters = election.registered[cid]
        row["participation_rate"] = 100.0 * votes_to_end / voters
        if votes_to_end > voters:
            anomalies[(cid, hour, "turnout_over_100")] = cfg.weights["turnout_over_100"]
            details[(cid, hour, "turnout_over_100")] = {"cumulative_votes": votes_to_end, "registered_voters": voters}
        if votes_to_end > bulletins_to_end:
            anomalies[(cid, hour, "votes_exceed_bulletins")] = cfg.weights["votes_exceed_bulletins"]
            details[(cid, hour, "votes_exceed_bulletins")] = {
                "cumulative_votes": votes_to_end,
                "cumulative_bulletins": bulletins_to_end,
            }
        if row["outside"]:
            anomalies[(cid, hour, "outside_voting_window")] = cfg.weights["outside_voting_window"]
            details[(cid, hour, "outside_voting_window")] = {"transactions_outside": row["outside"]}

    for hour in {h for _, h in hourly}:
        peers = {c: hourly[(c, h)]["votes_cast"] for (c, h) in hourly if h == hour}
        if len(peers) < cfg.min_peers:
            continue
        share = {c: v / election.registered[c] for c, v in peers.items()}
        m = statistics.median(share.values())
        mad = statistics.median([abs(x - m) for x in share.values()])
        for c, x in share.items():
            if x - m > cfg.k * 1.4826 * mad and peers[c] >= cfg.min_votes:
                anomalies[(c, hour, "velocity_spike")] = cfg.weights["velocity_spike"]
                details[(c, hour, "velocity_spike")] = {
                    "votes": peers[c],
                    "share": x,
                    "median": m,
                    "mad": mad,
                    "peers": len(peers),
                }

    for (cid, hour), row in hourly.items():
        row["anomaly_count"] = sum(1 for (c, h, _) in anomalies if (c, h) == (cid, hour))
        del row["outside"]

    found_episodes = episodes(hourly, anomalies, details)
    constituencies = {}
    for cid, voters in election.registered.items():
        rows = {h: r for (c, h), r in hourly.items() if c == cid}
        weight_sum = sum(e["weight"] for (c, _, _), e in found_episodes.items() if c == cid)
        activity = [
            {"hour_of_day": i, "bulletins_issued": 0, "votes_cast": 0, "transaction_count": 0} for i in range(24)
        ]
        for h, r in rows.items():
            slot = activity[h.astimezone(ZoneInfo(election.tz)).hour]
            for name in ("bulletins_issued", "votes_cast", "transaction_count"):
                slot[name] += r[name]
        votes = sum(r["votes_cast"] for r in rows.values())
        constituencies[cid] = {
            "registered_voters": voters,
            "total_bulletins_issued": sum(r["bulletins_issued"] for r in rows.values()),
            "total_votes_cast": votes,
            "total_transactions": sum(r["transaction_count"] for r in rows.values()),
            "total_anomalies": sum(1 for (c, _, _) in anomalies if c == cid),
            "participation_rate": 100.0 * votes / voters,
            "anomaly_score": round(100 * (1 - math.exp(-weight_sum / 10)), 2) if weight_sum else 0.0,
            "hourly_activity": activity,
        }

    total_voters = sum(election.registered.values())
    total_votes = sum(c["total_votes_cast"] for c in constituencies.values())
    turnout, running = [], 0
    for hour in sorted({h for _, h in hourly}):
        votes = sum(r["votes_cast"] for (c, h), r in hourly.items() if h == hour)
        running += votes
        turnout.append({"hour": hour, "votes_cast": votes, "participation_rate": 100.0 * running / total_voters})
    summary = {
        "registered_voters": total_voters,
        "total_bulletins_issued": sum(c["total_bulletins_issued"] for c in constituencies.values()),
        "total_votes_cast": total_votes,
        "total_transactions": sum(c["total_transactions"] for c in constituencies.values()),
        "total_anomalies": len(anomalies),
        "participation_rate": 100.0 * total_votes / total_voters,
        "constituency_count": len(election.registered),
        "constituencies_with_anomalies": sum(1 for c in constituencies.values() if c["total_anomalies"]),
        "hourly_turnout": turnout,
    }
    return {
        "hourly": hourly,
        "anomalies": anomalies,
        "anomaly_details": details,
        "episodes": found_episodes,
        "constituencies": constituencies,
        "election": summary,
    }


def magnitude(kind: str, d: dict) -> float | None:
    """How far a flagged hour is past its rule, per kind (docs/METRICS.md#anomaly-rules)."""
    if kind == "turnout_over_100":
        return 100.0 * d["cumulative_votes"] / d["registered_voters"]
    if kind == "votes_exceed_bulletins":
        return float(d["cumulative_votes"] - d["cumulative_bulletins"])
    if kind == "velocity_spike":
        return None if d["mad"] == 0 else (d["share"] - d["median"]) / (1.4826 * d["mad"])
    return float(d["transactions_outside"])


def episodes(hourly: dict, anomalies: dict, details: dict) -> dict[tuple[int, datetime, str], dict]:
    """Maximal runs of a constituency's flagged hours of one kind, consecutive among its hours
    with data, keyed by identity (constituency, first_hour, kind)."""
    found = {}
    for cid in sorted({c for c, _ in hourly}):
        hours = sorted(h for c, h in hourly if c == cid)
        for kind in KINDS:
            runs: list[list[datetime]] = []
            previous_flagged = False
            for h in hours:
                flagged = (cid, h, kind) in anomalies
                if flagged and not previous_flagged:
                    runs.append([])
                if flagged:
                    runs[-1].append(h)
                previous_flagged = flagged
            for run in runs:
                sizes = [magnitude(kind, details[(cid, h, kind)]) for h in run]
                defined = [m for m in sizes if m is not None]
                found[(cid, run[0], kind)] = {
                    "last_hour": run[-1],
                    "hours": len(run),
                    "peak": max(defined) if defined else None,
                    "open": run[-1] == hours[-1],
                    "weight": float(anomalies[(cid, run[0], kind)]),
                }
    return found


def episode_events(before: dict, after: dict) -> list[tuple[tuple, str]]:
    """The events docs/METRICS.md#episode-events asks for between two sets of episodes (as ``episodes``
    returns them): a new identity opened (and closed at once if it is not open), an open
    one that is not any more closed, a closed one that is open again opened, a vanished one
    withdrawn. Sorted by identity, then in the order they happen."""
    found = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if new is None:
            found.append((key, "withdrawn"))
        elif old is None:
            found.append((key, "opened"))
            if not new["open"]:
                found.append((key, "closed"))
        elif old["open"] != new["open"]:
            found.append((key, "opened" if new["open"] else "closed"))
    return found


def _period_start(hour: datetime, tz: str, period: str) -> datetime:
    zone = ZoneInfo(tz)
    if period == "hour":
        return hour
    local = hour.astimezone(zone).date()
    if period == "week":
        local = local - timedelta(days=local.weekday())
    elif period == "month":
        local = local.replace(day=1)
    return _first_instant(local, zone)


def _first_instant(day: date, zone: ZoneInfo) -> datetime:
    """The earliest instant whose local date is ``day`` (scan a 48 h range in 15-minute steps)."""
    probe = datetime.combine(day, time(0), tzinfo=UTC) - timedelta(hours=15)
    while probe.astimezone(zone).date() < day:
        probe += timedelta(minutes=15)
    return probe


def _next_period(start: datetime, tz: str, period: str) -> datetime:
    zone = ZoneInfo(tz)
    if period == "hour":
        return start + timedelta(hours=1)
    local = start.astimezone(zone).date()
    if period == "day":
        nxt = local + timedelta(days=1)
    elif period == "week":
        nxt = local + timedelta(days=7)
    else:
        nxt = date(local.year + local.month // 12, local.month % 12 + 1, 1)
    return _first_instant(nxt, zone)


def rollup(result: dict, election: RefElection, cid: int, period: str, start=None, end=None) -> list[dict]:
    """Time-period buckets of one constituency: counts summed, participation cumulative at
    the end of the period (over all the constituency's hours, not only those in range)."""
    rows = sorted((h, r) for (c, h), r in result["hourly"].items() if c == cid)
    voters = election.registered[cid]
    buckets: dict[datetime, dict] = {}
    running = 0
    for h, r in rows:
        running += r["votes_cast"]
        if (start is not None and h < start) or (end is not None and h >= end):
            continue
        s = _period_start(h, election.tz, period)
        b = buckets.setdefault(
            s,
            {
                "start": s,
                "end": _next_period(s, election.tz, period),
                "bulletins_issued": 0,
                "votes_cast": 0,
                "transaction_count": 0,
                "anomaly_count": 0,
            },
        )
        for name in ("bulletins_issued", "votes_cast", "transaction_count", "anomaly_count"):
            b[name] += r[name]
        b["participation_rate"] = 100.0 * running / voters
    return [buckets[s] for s in sorted(buckets)]
