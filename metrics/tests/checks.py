"""Shared test helpers: ingest through the real service, flush the real dirty marks, and
compare what the database holds with metrics/tests/reference.py, field by field and exactly."""

from datetime import datetime

from elections.models import Transaction
from elections.services import TransactionRow, transactions_delete, transactions_ingest
from metrics.models import Anomaly, DirtyBucket, Episode, EpisodeEvent, HourlyStats
from metrics.pipeline import dirty_buckets_flush
from metrics.tests import reference

HOURLY = (
    "bulletins_issued",
    "votes_cast",
    "transaction_count",
    "bulletin_velocity",
    "vote_velocity",
    "participation_rate",
    "anomaly_count",
)
EPISODE = ("last_hour", "hours", "peak", "open", "weight")
CONSTITUENCY = (
    "total_bulletins_issued",
    "total_votes_cast",
    "total_transactions",
    "total_anomalies",
    "participation_rate",
    "anomaly_score",
)


def ingest(election_id: int, txs: list[tuple[str, int, str, datetime]]):
    """Store (tx_hash, constituency_id, kind, timestamp) tuples through the one insert path.

    Generated streams resend hashes with other content too: as an import does, those
    conflicts are counted and not stored, so the first of each hash is what is kept."""
    rows = [TransactionRow(h, election_id, c, kind, ts, None) for h, c, kind, ts in txs]
    return transactions_ingest(rows=rows, conflicts="count")


def delete(tx_hashes) -> int:
    return transactions_delete(queryset=Transaction.objects.filter(tx_hash__in=list(tx_hashes)))


def flush(election_id: int, now: datetime) -> int:
    """The incremental path: recompute exactly the dirty marks the writes left (Scope.marks)."""
    consumed = 0
    while batch := dirty_buckets_flush(election_id=election_id, now=now):
        consumed += batch
    assert not DirtyBucket.objects.filter(election_id=election_id).exists()
    return consumed


def db_snapshot(election_id: int) -> dict:
    from elections.models import Constituency

    hourly = {
        (r["constituency_id"], r["hour"]): {name: r[name] for name in HOURLY}
        for r in HourlyStats.objects.filter(election_id=election_id).values("constituency_id", "hour", *HOURLY)
    }
    found = {
        (c, h, kind): (w, d)
        for c, h, kind, w, d in Anomaly.objects.filter(election_id=election_id).values_list(
            "constituency_id", "hour", "kind", "weight", "details"
        )
    }
    episodes = {
        (r["constituency_id"], r["first_hour"], r["kind"]): {name: r[name] for name in EPISODE}
        for r in Episode.objects.filter(election_id=election_id).values(
            "constituency_id", "first_hour", "kind", *EPISODE
        )
    }
    constituencies = {
        r["id"]: {name: r[name] for name in CONSTITUENCY}
        for r in Constituency.objects.filter(election_id=election_id).values("id", *CONSTITUENCY)
    }
    return {"hourly": hourly, "anomalies": found, "episodes": episodes, "constituencies": constituencies}


def reference_snapshot(ref: reference.RefElection, now: datetime) -> dict:
    result = reference.compute(ref, now)
    hourly = {key: {name: row[name] for name in HOURLY} for key, row in result["hourly"].items()}
    found = {key: (float(w), result["anomaly_details"][key]) for key, w in result["anomalies"].items()}
    constituencies = {cid: {name: row[name] for name in CONSTITUENCY} for cid, row in result["constituencies"].items()}
    return {"hourly": hourly, "anomalies": found, "episodes": result["episodes"], "constituencies": constituencies}


def assert_matches_reference(election_id: int, ref: reference.RefElection, now: datetime) -> dict:
    """Every HourlyStats row, Anomaly, Episode and constituency figure equals the reference exactly."""
    got, want = db_snapshot(election_id), reference_snapshot(ref, now)
    assert got["hourly"].keys() == want["hourly"].keys()
    for key in want["hourly"]:
        assert got["hourly"][key] == want["hourly"][key], key
    assert got["anomalies"] == want["anomalies"], _diff(got["anomalies"], want["anomalies"])
    assert got["episodes"] == want["episodes"], _diff(got["episodes"], want["episodes"])
    assert got["constituencies"] == want["constituencies"], _diff(got["constituencies"], want["constituencies"])
    return got


def assert_events_between(election_id: int, before: dict, after: dict, *, seen: int) -> tuple[int, list[str]]:
    """The events recorded after event id ``seen`` are exactly the ones docs/METRICS.md#episode-events asks
    for between two reference sets of episodes (one recompute apart). Returns the newest
    event id and the events' names."""
    new = list(EpisodeEvent.objects.filter(election_id=election_id, id__gt=seen).order_by("id"))
    got = sorted(((e.constituency_id, e.first_hour, e.kind), e.event) for e in new)
    assert got == sorted(reference.episode_events(before, after))
    return max([seen, *(e.id for e in new)]), [e.event for e in new]


def _diff(got: dict, want: dict) -> str:
    keys = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
    return "\n".join(f"{k}: got {got.get(k)!r}, want {want.get(k)!r}" for k in keys[:10])


class Tracked:
    """An election whose transactions are ingested for real and mirrored in the reference,
    for hand-written scenarios: ``add`` ingests, ``flush`` runs the incremental path,
    ``check`` compares everything with the reference."""

    def __init__(self, election, constituencies):
        self.election = election
        self.ids = [c.id for c in constituencies]
        self.ref = reference.RefElection(
            tz=election.timezone,
            starts_at=election.starts_at,
            ends_at=election.ends_at,
            registered={c.id: c.registered_voters for c in constituencies},
        )
        self._serial = 0

    def add(self, index: int, kind: str, ts: datetime, n: int = 1) -> list[str]:
        txs = []
        for _ in range(n):
            self._serial += 1
            txs.append((f"{self.election.code}-{self._serial}", self.ids[index], kind, ts))
        ingest(self.election.id, txs)
        self.ref.transactions.extend(txs)
        return [tx[0] for tx in txs]

    def delete(self, tx_hashes) -> None:
        gone = set(tx_hashes)
        delete(gone)
        self.ref.transactions = [tx for tx in self.ref.transactions if tx[0] not in gone]

    def set_voters(self, index: int, voters: int) -> None:
        from elections.models import Constituency
        from elections.services import constituency_save

        constituency = Constituency.objects.get(pk=self.ids[index])
        constituency.registered_voters = voters
        constituency_save(constituency=constituency)
        self.ref.registered[self.ids[index]] = voters

    def flush(self, now: datetime) -> int:
        return flush(self.election.id, now)

    def check(self, now: datetime) -> dict:
        return assert_matches_reference(self.election.id, self.ref, now)
