"""The one write path of observed data (docs/ARCHITECTURE in the README: "One write path").

Every change to elections, constituencies and transactions -- the API, the bulk API, both
imports, the admin, the demo loader -- goes through a function here. Each validates, writes
in one database transaction and announces what changed exactly one way:

- a single saved Transaction announces itself through Django's ``post_save``;
- every other change hands its buckets to ``elections.signals.buckets_changed``, inside the
  same database transaction, so the metrics side's dirty marks commit with the data.

Nothing here knows what listens; the metrics app does (it may import this app, never the
reverse).
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from election_monitor import bulk_sql
from elections.models import Constituency, Election, Transaction, TransactionKind
from elections.signals import EVERY_HOUR, WHOLE_ELECTION, buckets_changed
from elections.timebuckets import hour_bucket, zone

TX_HASH_MAX_LENGTH = Transaction._meta.get_field("tx_hash").max_length
KINDS = frozenset(TransactionKind.values)
BLOCK_NUMBER_MAX = 2**63 - 1


class RowError(ValueError):
    """One field of one incoming transaction is invalid."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TransactionRow(NamedTuple):
    """One validated incoming transaction. A tuple, not a dataclass: a 10,000-item list builds
    10,000 of them, and a frozen dataclass's __init__ costs several times a tuple's."""

    tx_hash: str
    election_id: int
    constituency_id: int
    kind: str
    timestamp: datetime
    block_number: int | None


class ConstituencyRef(NamedTuple):
    """What validating a row needs of a constituency (lookups need not build model objects)."""

    id: int
    election_id: int
    code: str


@dataclass
class IngestResult:
    created: int = 0
    duplicates: int = 0
    buckets: set = field(default_factory=set)


def parse_aware_datetime(value, *, field: str = "timestamp") -> datetime:
    """ISO 8601 with a UTC offset ('Z' or ±hh:mm); naive values are refused, never guessed."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and (text := value.strip()):
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise RowError(field, f"'{value}' is not an ISO 8601 datetime.") from None
    else:
        raise RowError(field, "An ISO 8601 datetime with a UTC offset is required.")
    if parsed.utcoffset() is None:
        raise RowError(field, f"'{value}' has no UTC offset; add one such as 'Z' or '+03:00'.")
    # Near year 1 or 9999 an instant cannot be shown in every timezone (OverflowError).
    # Subtle: offsets are under a day, so a year of 3..9997 is 2..9998 in UTC too; only
    # values near the edges pay for the conversion.
    if not 3 <= parsed.year <= 9997:
        try:
            year = parsed.astimezone(UTC).year
        except OverflowError:
            year = None
        if year is None or not 2 <= year <= 9998:
            raise RowError(field, f"'{value}' is out of range.")
    return parsed


def transaction_row_parse(
    raw: Mapping,
    *,
    constituency_lookup: Callable[[object], "Constituency | None"],
    election_id: int | None = None,
) -> TransactionRow:
    """Validate one incoming transaction (API item, CSV line or JSON line).

    ``constituency_lookup`` resolves the raw ``constituency`` value (an id from the API, a
    code from imports) to a Constituency or None. ``election_id`` is the election the
    caller expects, if any. Raises RowError naming the first bad field.
    """
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise RowError("non_field_errors", "Expected a JSON object.")
    get = raw.get

    tx_hash = get("tx_hash")
    if not isinstance(tx_hash, str) or not tx_hash or tx_hash.isspace():
        raise RowError("tx_hash", "A non-empty string is required.")
    if len(tx_hash) > TX_HASH_MAX_LENGTH:
        raise RowError("tx_hash", f"At most {TX_HASH_MAX_LENGTH} characters.")
    if "\x00" in tx_hash:
        raise RowError("tx_hash", "Must not contain NUL characters.")  # PostgreSQL text cannot hold them
    if not tx_hash.isascii():
        # A JSON "\ud800" escape or an import line that is not UTF-8 gives lone surrogates,
        # which no database driver can encode.
        try:
            tx_hash.encode("utf-8")
        except UnicodeEncodeError:
            raise RowError("tx_hash", "Must be valid UTF-8 text.") from None

    raw_constituency = get("constituency")
    if raw_constituency is None or raw_constituency == "":
        raise RowError("constituency", "This field is required.")
    constituency = constituency_lookup(raw_constituency)
    if constituency is None:
        raise RowError("constituency", f"Unknown constituency '{raw_constituency}'.")

    claimed_election = get("election")
    if (
        claimed_election is not None
        and claimed_election != ""
        and str(claimed_election) != str(constituency.election_id)
    ):
        raise RowError("election", f"Constituency {constituency.code} belongs to another election.")
    if election_id is not None and constituency.election_id != election_id:
        raise RowError("constituency", f"Constituency {constituency.code} belongs to another election.")

    kind = get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise RowError("kind", f"'{kind}' is not one of {', '.join(sorted(KINDS))}.")

    timestamp = parse_aware_datetime(get("timestamp"))

    block_number = get("block_number")
    if type(block_number) is int:  # the common case: a JSON integer
        if not 0 <= block_number <= BLOCK_NUMBER_MAX:
            raise RowError("block_number", "Must be a non-negative 64-bit integer.")
    elif block_number is None or block_number == "":
        block_number = None
    else:
        if isinstance(block_number, bool) or (isinstance(block_number, float) and not block_number.is_integer()):
            raise RowError("block_number", "Must be a non-negative integer.")
        try:
            block_number = int(block_number)
        except (TypeError, ValueError):
            raise RowError("block_number", "Must be a non-negative integer.") from None
        if not 0 <= block_number <= BLOCK_NUMBER_MAX:
            raise RowError("block_number", "Must be a non-negative 64-bit integer.")

    return TransactionRow(tx_hash, constituency.election_id, constituency.id, kind, timestamp, block_number)


def transactions_ingest(*, rows: Sequence[TransactionRow]) -> IngestResult:
    """Store new transactions, skip already-stored tx_hashes, and announce their buckets.

    All-or-nothing: one database transaction. Duplicates (already stored, or repeated
    within ``rows``) are counted, not errors. The buckets go out through
    ``buckets_changed`` inside the same transaction, so the metrics side's dirty marks
    commit with the rows.
    """
    result = IngestResult()
    if not rows:
        return result
    zones = {
        pk: zone(name)
        for pk, name in Election.objects.filter(id__in={row.election_id for row in rows}).values_list("id", "timezone")
    }
    received_at = timezone.now()
    # Subtle: a tx_hash repeated within ``rows`` is not removed here: ON CONFLICT DO NOTHING
    # skips it like any stored one, and the insert keeps the rows' order, so the first wins.
    values = [
        (tx_hash, election_id, constituency_id, kind, timestamp, hour_bucket(timestamp, zones[election_id]),
         block_number, received_at)
        for tx_hash, election_id, constituency_id, kind, timestamp, block_number in rows
    ]  # fmt: skip

    with transaction.atomic():
        created_buckets = bulk_sql.rows_insert_new(
            Transaction, _COLUMNS, values, unique="tx_hash", group_by=("election", "constituency", "hour")
        )
        result.created = sum(created_buckets.values())
        result.duplicates = len(values) - result.created
        by_election: dict[int, set] = {}
        for election_id, constituency_id, hour in created_buckets:
            by_election.setdefault(election_id, set()).add((constituency_id, hour))
        for election_id, buckets in by_election.items():
            result.buckets |= buckets
            buckets_changed.send(sender=Transaction, election_id=election_id, buckets=buckets)
    return result


_COLUMNS = ("tx_hash", "election", "constituency", "kind", "timestamp", "hour", "block_number", "received_at")


def transaction_create(*, row: TransactionRow) -> tuple[Transaction, bool]:
    """Store one transaction through the ORM; (the stored transaction, created?).

    A single save is the product's defining trigger: its ``post_save`` reaches the metrics
    pipeline (after commit). An already-stored tx_hash answers with the stored row."""
    with transaction.atomic():
        stored = Transaction.objects.filter(tx_hash=row.tx_hash).first()
        if stored is not None:
            return stored, False
        candidate = Transaction(
            tx_hash=row.tx_hash,
            election_id=row.election_id,
            constituency_id=row.constituency_id,
            kind=row.kind,
            timestamp=row.timestamp,
            block_number=row.block_number,
        )
        try:
            with transaction.atomic():
                candidate.save(force_insert=True)
        except IntegrityError:
            # A concurrent request stored the same tx_hash between the look-up and the insert.
            return Transaction.objects.get(tx_hash=row.tx_hash), False
    return candidate, True


def transaction_save(*, instance: Transaction) -> Transaction:
    """Save an added or edited transaction (admin): ``post_save`` announces both its new
    bucket and, for an edit that moved it, the bucket it left."""
    with transaction.atomic():
        instance.save()
    return instance


def transactions_delete(*, queryset: QuerySet) -> int:
    """Delete transactions and announce their buckets (set-based: one DISTINCT query).

    Subtle: Transaction has no ``post_delete`` receiver on purpose: one would make Django
    load every transaction of a deleted election into memory. A bare ``QuerySet.delete()``
    bypasses this function; the sweep and the drift verification repair what it leaves."""
    with transaction.atomic():
        buckets_by_election: dict[int, set] = {}
        for election_id, constituency_id, hour in (
            queryset.values_list("election_id", "constituency_id", "hour").distinct().order_by()
        ):
            buckets_by_election.setdefault(election_id, set()).add((constituency_id, hour))
        deleted, _ = queryset.delete()
        for election_id, buckets in buckets_by_election.items():
            buckets_changed.send(sender=Transaction, election_id=election_id, buckets=buckets)
    return deleted


# --- elections ------------------------------------------------------------------------------


def election_save(*, election: Election) -> Election:
    """Create or save an edited election. A moved voting window changes every velocity and
    the outside-window anomalies; any edit (a name) shows in the election's figures, and a
    new election gets its first, empty, figures."""
    with transaction.atomic():
        election.full_clean()
        election.save()
        buckets_changed.send(sender=Election, election_id=election.id, buckets={WHOLE_ELECTION})
    return election


def elections_delete(*, queryset: QuerySet) -> int:
    """Delete elections with everything they own (cascades).

    Nothing is announced: no figure of a deleted election survives, and readers anchor
    their cached figures in rows the cascade removes."""
    with transaction.atomic():
        deleted, _ = queryset.delete()
    return deleted


# --- constituencies -------------------------------------------------------------------------


def constituency_save(*, constituency: Constituency) -> Constituency:
    """Create or save an edited constituency (an edit writes its editable fields only).
    Registered voters feed every participation rate and turnout anomaly of it; a name shows
    in its figures."""
    with transaction.atomic():
        constituency.full_clean()
        constituency.save()
        buckets_changed.send(
            sender=Constituency, election_id=constituency.election_id, buckets={(constituency.id, EVERY_HOUR)}
        )
    return constituency


def constituencies_upsert(*, election_id: int, wanted: Mapping[str, tuple[str, int]]) -> tuple[int, int]:
    """Create or update the election's constituencies by code: {code: (name, registered
    voters)}; returns (created, updated). Set-based, one database transaction."""
    with transaction.atomic():
        existing = {c.code: c for c in Constituency.objects.filter(election_id=election_id, code__in=list(wanted))}
        new, changed = [], []
        for code, (name, voters) in wanted.items():
            current = existing.get(code)
            if current is None:
                new.append(Constituency(election_id=election_id, code=code, name=name, registered_voters=voters))
            elif (current.name, current.registered_voters) != (name, voters):
                current.name, current.registered_voters = name, voters
                changed.append(current)
        Constituency.objects.bulk_create(new, batch_size=1000)
        Constituency.objects.bulk_update(changed, ["name", "registered_voters"], batch_size=1000)
        if new or changed:
            created_ids = Constituency.objects.filter(
                election_id=election_id, code__in=[c.code for c in new]
            ).values_list("id", flat=True)
            buckets = {(pk, EVERY_HOUR) for pk in [*created_ids, *(c.id for c in changed)]}
            buckets_changed.send(sender=Constituency, election_id=election_id, buckets=buckets)
    return len(new), len(changed)


def constituencies_delete(*, queryset: QuerySet) -> int:
    """Delete constituencies with their transactions. The remaining constituencies' spikes
    were judged against the deleted ones and the election's totals counted them: their
    elections are announced whole."""
    with transaction.atomic():
        election_ids = set(queryset.values_list("election_id", flat=True).distinct().order_by())
        deleted, _ = queryset.delete()
        for election_id in sorted(election_ids):
            buckets_changed.send(sender=Constituency, election_id=election_id, buckets={WHOLE_ELECTION})
    return deleted


def constituency_lookup_by_id(ids: Iterable) -> Callable:
    """A lookup for API items, which name constituencies by id; one query for the batch."""
    found = {
        pk: ConstituencyRef(pk, election_id, code)
        for pk, (election_id, code) in bulk_sql.rows_by_ids(
            Constituency, (pk for pk in map(_as_id, ids) if pk is not None), ("election_id", "code")
        ).items()
    }

    def lookup(value):
        if type(value) is int:  # a JSON integer: any other id is simply not among the keys
            return found.get(value)
        pk = _as_id(value)
        return None if pk is None else found.get(pk)

    return lookup


def _as_id(value) -> int | None:
    """An integer id in the database's range (an out-of-range one would crash the query)."""
    if type(value) is int:
        return value if 0 < value <= BLOCK_NUMBER_MAX else None
    if isinstance(value, bool | float):
        return None
    try:
        pk = int(value)
    except (TypeError, ValueError):
        return None
    return pk if 0 < pk <= BLOCK_NUMBER_MAX else None


def max_ingest_batch() -> int:
    return settings.INGEST_MAX_BATCH
