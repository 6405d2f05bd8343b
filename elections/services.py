"""Ingest: every path that stores transactions (API, bulk API, imports, seed) ends here."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from elections.models import Constituency, Election, Transaction, TransactionKind
from elections.signals import buckets_changed
from elections.timebuckets import hour_bucket, zone

TX_HASH_MAX_LENGTH = Transaction._meta.get_field("tx_hash").max_length
KINDS = frozenset(TransactionKind.values)
INSERT_BATCH = 2000
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
    buckets: set = None

    def __post_init__(self):
        if self.buckets is None:
            self.buckets = set()


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
    election_window: Callable[[int], tuple[datetime, datetime] | None] | None = None,
) -> TransactionRow:
    """Validate one incoming transaction (API item, CSV line or JSON line).

    ``constituency_lookup`` resolves the raw ``constituency`` value (an id from the API, a
    code from imports) to a Constituency or None. ``election_id`` is the election the
    caller expects, if any. ``election_window`` gives an election's voting window by id
    (callers validating many rows share one ``bounds.election_window_lookup()``; without
    it, each call queries the window). Raises RowError naming the first bad field.
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
    from elections import bounds  # here, not at the top: this function is this module's only user

    window = (election_window or bounds.election_window_lookup())(constituency.election_id)
    if window is not None and (problem := bounds.timestamp_window_error(timestamp, window)):
        raise RowError("timestamp", problem)

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


def transactions_ingest(*, rows: Sequence[TransactionRow], defer_flush: bool = False) -> IngestResult:
    """Store new transactions, skip already-stored tx_hashes, and mark their buckets dirty.

    All-or-nothing: runs in one database transaction. Duplicates (already stored, or
    repeated within ``rows``) are counted, not errors. The metrics pipeline is told through
    ``buckets_changed`` inside the same transaction, so the dirty marks commit with the rows.
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
        created_buckets = _insert_ignoring_duplicates(values)
        result.created = sum(created_buckets.values())
        result.duplicates = len(values) - result.created
        by_election: dict[int, set] = {}
        for election_id, constituency_id, hour in created_buckets:
            by_election.setdefault(election_id, set()).add((constituency_id, hour))
        for election_id, buckets in by_election.items():
            result.buckets |= buckets
            buckets_changed.send(sender=Transaction, election_id=election_id, buckets=buckets, defer_flush=defer_flush)
    return result


_COLUMNS = ("tx_hash", "election_id", "constituency_id", "kind", "timestamp", "hour", "block_number", "received_at")


def _insert_ignoring_duplicates(values: list[tuple]) -> dict[tuple, int]:
    """Insert rows whose tx_hash is new (the first of repeats within ``values``); return
    how many were inserted into each (election_id, constituency_id, hour) bucket.

    One statement per chunk of ``INSERT ... ON CONFLICT (tx_hash) DO NOTHING RETURNING``:
    on PostgreSQL the rows arrive by COPY into a temporary table first (several times
    faster than a multi-row VALUES list with its thousands of bound parameters), elsewhere
    as a multi-row VALUES list (SQLite ≥ 3.35 has ON CONFLICT ... RETURNING too). Either
    way rows are inserted in the given order and the result is the same.
    """
    if not values:
        return {}
    if connection.vendor == "postgresql":
        return _insert_ignoring_duplicates_copy(values)
    table = connection.ops.quote_name(Transaction._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in _COLUMNS)
    adapt = _row_adapter()
    buckets: dict[str, tuple] = {}
    for tx_hash, election_id, constituency_id, _, _, hour, _, _ in values:
        buckets.setdefault(tx_hash, (election_id, constituency_id, hour))
    created: dict[tuple, int] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(values), INSERT_BATCH):
            chunk = values[start : start + INSERT_BATCH]
            placeholders = ", ".join(["(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"] * len(chunk))
            params = [value for row in chunk for value in adapt(row)]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {placeholders} "
                f"ON CONFLICT (tx_hash) DO NOTHING RETURNING tx_hash",
                params,
            )
            for (tx_hash,) in cursor.fetchall():
                bucket = buckets[tx_hash]
                created[bucket] = created.get(bucket, 0) + 1
    return created


_STAGE = "elections_transaction_stage"
_STAGE_TYPES = ("int4", "varchar", "int8", "int8", "varchar", "timestamptz", "timestamptz", "int8", "timestamptz")


def _insert_ignoring_duplicates_copy(values: list[tuple]) -> dict[tuple, int]:
    """PostgreSQL: COPY into a session temp table, then one INSERT ... SELECT per call,
    which answers with the inserted rows counted per bucket (a few thousand rows instead
    of one per transaction).

    Subtle: the stage table lives as long as the connection and is emptied by the same
    statement that moves its rows (DELETE ... RETURNING in a CTE), so a second call within
    one outer transaction never sees the first call's rows; ON COMMIT DELETE ROWS is the
    backstop when a statement fails half-way and the transaction is rolled back to a savepoint.
    """
    table = connection.ops.quote_name(Transaction._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in _COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} ("
            "ord integer NOT NULL, tx_hash varchar(128) NOT NULL, election_id bigint NOT NULL, "
            "constituency_id bigint NOT NULL, kind varchar(32) NOT NULL, timestamp timestamptz NOT NULL, "
            "hour timestamptz NOT NULL, block_number bigint, received_at timestamptz NOT NULL"
            ") ON COMMIT DELETE ROWS"
        )
        with connection.wrap_database_errors:
            # Binary COPY with declared types: psycopg packs the values in C, ten times less
            # CPU than formatting datetimes as text.
            with cursor.cursor.copy(f"COPY {_STAGE} (ord, {columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_STAGE_TYPES)
                write_row = copy.write_row
                for ord_, row in enumerate(values):
                    write_row((ord_, *row))
        cursor.execute(
            f"WITH staged AS (DELETE FROM {_STAGE} RETURNING *), "
            f"inserted AS (INSERT INTO {table} ({columns}) SELECT {columns} FROM staged ORDER BY ord "
            f"ON CONFLICT (tx_hash) DO NOTHING RETURNING election_id, constituency_id, hour) "
            f"SELECT election_id, constituency_id, hour, count(*) FROM inserted GROUP BY 1, 2, 3"
        )
        return {(election_id, constituency_id, hour): n for election_id, constituency_id, hour, n in cursor.fetchall()}


def _row_adapter() -> Callable[[tuple], tuple]:
    """Raw SQL bypasses field adaptation: SQLite stores datetimes as naive UTC text.

    Rows of one batch share their hour buckets, their received_at and often their
    timestamps, so each distinct datetime is converted once.
    """
    if connection.vendor != "sqlite":
        return lambda row: row
    utc = zone("UTC")
    fixed_utc = UTC
    texts: dict[datetime, str] = {}

    def text(value: datetime) -> str:
        if value.tzinfo is fixed_utc:  # parsed '...Z' / '+00:00', and every hour bucket
            return value.isoformat(" ")[:-6]  # without the '+00:00'
        if value.fold:
            # Subtle: within one zone, datetimes compare and hash ignoring fold, so the second
            # of two ambiguous wall times would find the first's text; never cache those.
            return value.astimezone(utc).replace(tzinfo=None).isoformat(" ")
        found = texts.get(value)
        if found is None:
            found = texts[value] = value.astimezone(utc).replace(tzinfo=None).isoformat(" ")
        return found

    def adapt(row: tuple) -> tuple:
        tx_hash, election_id, constituency_id, kind, timestamp, hour, block_number, received_at = row
        return (
            tx_hash,
            election_id,
            constituency_id,
            kind,
            text(timestamp),
            text(hour),
            block_number,
            text(received_at),
        )

    return adapt


def constituency_lookup_by_id(ids: Iterable) -> Callable:
    """A lookup for API items, which name constituencies by id; one query for the batch."""
    wanted = {pk for pk in map(_as_id, ids) if pk is not None}
    if not wanted:
        found = {}
    elif connection.vendor == "postgresql":
        # One array parameter: Django's IN list compiles and binds a parameter per id
        # (for 2,000 ids 12 ms of CPU against 4 ms).
        table = connection.ops.quote_name(Constituency._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id, election_id, code FROM {table} WHERE id = ANY(%s)", [list(wanted)])
            found = {pk: ConstituencyRef(pk, election_id, code) for pk, election_id, code in cursor.fetchall()}
    else:
        found = {
            pk: ConstituencyRef(pk, election_id, code)
            for pk, election_id, code in Constituency.objects.filter(pk__in=wanted).values_list(
                "id", "election_id", "code"
            )
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
    if isinstance(value, (bool, float)):
        return None
    try:
        pk = int(value)
    except (TypeError, ValueError):
        return None
    return pk if 0 < pk <= BLOCK_NUMBER_MAX else None


def max_ingest_batch() -> int:
    return settings.INGEST_MAX_BATCH


def transactions_delete(*, queryset) -> int:
    """Delete transactions and mark their buckets dirty (set-based: one DISTINCT query)."""
    with transaction.atomic():
        buckets_by_election: dict[int, set] = {}
        for election_id, constituency_id, hour in (
            queryset.values_list("election_id", "constituency_id", "hour").distinct().order_by()
        ):
            buckets_by_election.setdefault(election_id, set()).add((constituency_id, hour))
        deleted, _ = queryset.delete()
        for election_id, buckets in buckets_by_election.items():
            buckets_changed.send(sender=Transaction, election_id=election_id, buckets=buckets, defer_flush=False)
    return deleted
