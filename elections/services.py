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

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from election_monitor import bulk_sql
from election_monitor.exceptions import ServiceError
from elections.models import (
    AuditAction,
    AuditEntry,
    CertificationAction,
    CertificationEvent,
    Constituency,
    Election,
    IngestBatch,
    IngestGrant,
    IngestSource,
    Transaction,
    TransactionKind,
)
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
    # Indexes (into the rows given) of resends whose content differs from the stored row.
    conflicts: list["Conflict"] = field(default_factory=list)
    buckets: set = field(default_factory=set)


class Conflict(NamedTuple):
    index: int
    tx_hash: str
    fields: tuple[str, ...]  # which of constituency, kind, timestamp differ from the stored row

    def message(self) -> str:
        return (
            f"tx_hash '{self.tx_hash}' is already stored with another {', '.join(self.fields)}; "
            "a resend must repeat the stored content."
        )


class ElectionCertified(ServiceError):
    """Writes to a certified election are refused until it is un-certified."""

    status = 409


class TransactionConflict(ServiceError):
    status = 409

    def __init__(self, conflicts: list[Conflict]):
        first = conflicts[0]
        super().__init__(f"Item {first.index}: {first.message()} Nothing was stored.")
        self.conflicts = conflicts

    def body(self) -> dict:
        listed = [{"index": c.index, "tx_hash": c.tx_hash, "fields": list(c.fields)} for c in self.conflicts[:50]]
        return {"detail": self.message, "conflicts": listed}


class OutOfScope(ServiceError):
    """A write outside the elections (or constituencies) the user's credential is limited to."""

    status = 403


@dataclass(frozen=True)
class Origin:
    """Who is writing, through which path: recorded on the batch every transaction points at."""

    source: str = IngestSource.IMPORT
    user: object = None  # a User, or None for a command or an internal call
    label: str = ""


_HEX_HASH = re.compile(r"(?:0[xX])?[0-9a-fA-F]+")


def tx_hash_canonical(raw: str) -> str:
    """The one form a tx_hash is stored and compared in: surrounding white space stripped,
    and a hexadecimal hash (with or without its 0x) in lower case, so that "0xABC", "0xabc"
    and " 0xabc " are one transaction."""
    text = raw.strip()
    return text.lower() if _HEX_HASH.fullmatch(text) else text


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
    (callers validating many rows share one ``selectors.election_window_lookup()``; without
    it, each call queries the window). Raises RowError naming the first bad field.
    """
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise RowError("non_field_errors", "Expected a JSON object.")
    get = raw.get

    tx_hash = get("tx_hash")
    if not isinstance(tx_hash, str) or not tx_hash or tx_hash.isspace():
        raise RowError("tx_hash", "A non-empty string is required.")
    tx_hash = tx_hash_canonical(tx_hash)
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
    from elections import bounds, selectors  # here, not at the top: this function is their only user

    window = (election_window or selectors.election_window_lookup())(constituency.election_id)
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


def transactions_ingest(
    *, rows: Sequence[TransactionRow], origin: "Origin | None" = None, conflicts: str = "reject"
) -> IngestResult:
    """Store new transactions, skip already-stored tx_hashes, and announce their buckets.

    One database transaction. A resend with the stored content is a duplicate, counted; a
    resend whose constituency, kind or timestamp differ is a conflict: with
    ``conflicts="reject"`` (the API) nothing is stored and TransactionConflict names the
    first; with ``"count"`` (imports) the others are stored and the conflicts listed.
    Refuses a certified election (ElectionCertified). Each election's rows get a batch
    recording ``origin``. The buckets go out through ``buckets_changed`` inside the same
    transaction, so the metrics side's dirty marks commit with the rows.
    """
    result = IngestResult()
    if not rows:
        return result
    origin = origin or Origin()
    received_at = timezone.now()
    with transaction.atomic():
        elections = elections_lock_for_writes(election_ids={row.election_id for row in rows})
        zones = {pk: zone(name) for pk, (name, _) in elections.items()}
        batches = {
            election_id: IngestBatch.objects.create(
                election_id=election_id, user=origin.user, source=origin.source, label=origin.label[:255]
            ).pk
            for election_id in sorted(elections)
        }
        # Subtle: a tx_hash repeated within ``rows`` is not removed here: ON CONFLICT DO
        # NOTHING skips it like any stored one, and the insert keeps the rows' order, so the
        # first wins; the conflict check below compares the later ones with it.
        values = [
            (tx_hash, election_id, constituency_id, kind, timestamp, hour_bucket(timestamp, zones[election_id]),
             block_number, received_at, batches[election_id])
            for tx_hash, election_id, constituency_id, kind, timestamp, block_number in rows
        ]  # fmt: skip
        created_buckets = bulk_sql.rows_insert_new(
            Transaction, _COLUMNS, values, unique="tx_hash", group_by=("election", "constituency", "hour")
        )
        result.created = sum(created_buckets.values())
        if result.created < len(values):
            result.conflicts = _conflicts_find(rows=rows, own_batches=set(batches.values()))
            if result.conflicts and conflicts == "reject":
                raise TransactionConflict(result.conflicts)
        result.duplicates = len(values) - result.created - len(result.conflicts)
        by_election: dict[int, set] = {}
        for election_id, constituency_id, hour in created_buckets:
            by_election.setdefault(election_id, set()).add((constituency_id, hour))
        for election_id, batch_id in batches.items():
            created = sum(n for (e, _, _), n in created_buckets.items() if e == election_id)
            IngestBatch.objects.filter(pk=batch_id).update(
                created=created,
                conflicts=sum(1 for c in result.conflicts if rows[c.index].election_id == election_id),
                duplicates=sum(1 for row in rows if row.election_id == election_id)
                - created
                - sum(1 for c in result.conflicts if rows[c.index].election_id == election_id),
            )
        for election_id, buckets in by_election.items():
            result.buckets |= buckets
            buckets_changed.send(sender=Transaction, election_id=election_id, buckets=buckets)
    return result


def _conflicts_find(*, rows: Sequence[TransactionRow], own_batches: set[int]) -> list[Conflict]:
    """The rows whose tx_hash is stored with other content: one query over the rows' hashes.

    A row stored by this call (its batch is one of ``own_batches``) is the first of its
    hash here, so repeats within the call are compared with it like with any stored row."""
    stored = {
        tx_hash: (constituency_id, kind, timestamp, batch_id)
        for tx_hash, (constituency_id, kind, timestamp, batch_id) in bulk_sql.rows_by_key(
            Transaction, "tx_hash", {row.tx_hash for row in rows}, ("constituency_id", "kind", "timestamp", "batch_id")
        ).items()
    }
    found, first_seen = [], set()
    for index, row in enumerate(rows):
        constituency_id, kind, timestamp, batch_id = stored[row.tx_hash]
        if batch_id in own_batches and row.tx_hash not in first_seen:
            first_seen.add(row.tx_hash)  # the row this call stored
            continue
        differs = tuple(
            name
            for name, same in (
                ("constituency", constituency_id == row.constituency_id),
                ("kind", kind == row.kind),
                ("timestamp", timestamp == row.timestamp),
            )
            if not same
        )
        if differs:
            found.append(Conflict(index, row.tx_hash, differs))
    return found


def elections_lock_for_writes(*, election_ids: Iterable[int]) -> dict[int, tuple[str, datetime | None]]:
    """{id: (timezone, certified_at)} of the elections a write goes to, refusing certified ones.

    Subtle: read with FOR KEY SHARE, the lock every insert's foreign-key check takes anyway
    (so flushes, which hold FOR NO KEY UPDATE, never wait for it), which certification's
    FOR UPDATE conflicts with: a write either commits before a certification or sees it."""
    found = bulk_sql.rows_by_ids(Election, election_ids, ("timezone", "certified_at", "code"), lock_key_share=True)
    for _, certified_at, code in found.values():
        if certified_at is not None:
            raise ElectionCertified(
                f"Election {code} is certified: its data can no longer change. Staff can un-certify it, with a reason."
            )
    return {pk: (tz, certified_at) for pk, (tz, certified_at, _) in found.items()}


_COLUMNS = (
    "tx_hash",
    "election",
    "constituency",
    "kind",
    "timestamp",
    "hour",
    "block_number",
    "received_at",
    "batch",
)


def transaction_create(*, row: TransactionRow, origin: "Origin | None" = None) -> tuple[Transaction, bool]:
    """Store one transaction through the ORM; (the stored transaction, created?).

    A single save is the product's defining trigger: its ``post_save`` reaches the metrics
    pipeline (after commit). An already-stored tx_hash with the same content answers with
    the stored row; with other content it is a TransactionConflict."""
    origin = origin or Origin(IngestSource.API)
    with transaction.atomic():
        elections_lock_for_writes(election_ids={row.election_id})
        stored = Transaction.objects.filter(tx_hash=row.tx_hash).first()
        if stored is None:
            batch = IngestBatch.objects.create(
                election_id=row.election_id, user=origin.user, source=origin.source, label=origin.label[:255], created=1
            )
            candidate = Transaction(
                tx_hash=row.tx_hash,
                election_id=row.election_id,
                constituency_id=row.constituency_id,
                kind=row.kind,
                timestamp=row.timestamp,
                block_number=row.block_number,
                batch=batch,
            )
            try:
                with transaction.atomic():
                    candidate.save(force_insert=True)
                return candidate, True
            except IntegrityError:
                # A concurrent request stored the same tx_hash between the look-up and the insert.
                batch.delete()
                stored = Transaction.objects.get(tx_hash=row.tx_hash)
        differs = tuple(
            name
            for name, same in (
                ("constituency", stored.constituency_id == row.constituency_id),
                ("kind", stored.kind == row.kind),
                ("timestamp", stored.timestamp == row.timestamp),
            )
            if not same
        )
        if differs:
            raise TransactionConflict([Conflict(0, row.tx_hash, differs)])
    return stored, False


def transaction_save(*, instance: Transaction, user=None) -> Transaction:
    """Save an added or edited transaction (admin): ``post_save`` announces both its new
    bucket and, for an edit that moved it, the bucket it left. Audited when ``user`` is given."""
    with transaction.atomic():
        elections_lock_for_writes(election_ids={instance.election_id or instance.constituency.election_id})
        instance.tx_hash = tx_hash_canonical(instance.tx_hash)
        adding = instance._state.adding
        before = _stored_values(instance)
        if adding:
            instance.batch = IngestBatch.objects.create(
                election_id=instance.election_id or instance.constituency.election_id,
                user=user,
                source=IngestSource.ADMIN,
                label="admin",
                created=1,
            )
        instance.save()
        _audit(user=user, instance=instance, before=before)
    return instance


def transactions_delete(*, queryset: QuerySet, user=None) -> int:
    """Delete transactions and announce their buckets (set-based: one DISTINCT query).
    Audited when ``user`` is given (an admin delete).

    Subtle: Transaction has no ``post_delete`` receiver on purpose: one would make Django
    load every transaction of a deleted election into memory. A bare ``QuerySet.delete()``
    bypasses this function; the sweep and the drift verification repair what it leaves."""
    with transaction.atomic():
        buckets_by_election: dict[int, set] = {}
        for election_id, constituency_id, hour in (
            queryset.values_list("election_id", "constituency_id", "hour").distinct().order_by()
        ):
            buckets_by_election.setdefault(election_id, set()).add((constituency_id, hour))
        elections_lock_for_writes(election_ids=buckets_by_election)
        if user is not None:
            _audit_deletes(user=user, queryset=queryset)
        deleted, _ = queryset.delete()
        for election_id, buckets in buckets_by_election.items():
            buckets_changed.send(sender=Transaction, election_id=election_id, buckets=buckets)
    return deleted


# --- audit ----------------------------------------------------------------------------------

AUDIT_DELETES_ITEMIZED = 1000  # deletes of more objects are audited as one entry with a count


def _stored_values(instance) -> dict | None:
    if instance._state.adding or instance.pk is None:
        return None
    names = [f.attname for f in instance._meta.concrete_fields if f.editable]
    return type(instance).objects.filter(pk=instance.pk).values(*names).first()


def _jsonable(value):
    return value.isoformat() if isinstance(value, datetime) else value


def _audit(*, user, instance, before: dict | None) -> None:
    """One entry for an admin add or change, with the fields that changed."""
    if user is None:
        return
    after = {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields if f.editable}
    if before is None:
        action, changes = AuditAction.ADD, {name: [None, _jsonable(value)] for name, value in after.items()}
    else:
        action = AuditAction.CHANGE
        changes = {
            name: [_jsonable(before.get(name)), _jsonable(value)]
            for name, value in after.items()
            if before.get(name) != value
        }
    AuditEntry.objects.create(
        user=user,
        username=user.get_username(),
        action=action,
        model=instance._meta.label,
        object_id=instance.pk,
        object_repr=str(instance)[:255],
        changes=changes,
    )


def _audit_deletes(*, user, queryset: QuerySet) -> None:
    """Entries for an admin delete, written before the rows go: one per object, or one with
    the count when a selection is larger than AUDIT_DELETES_ITEMIZED."""
    model = queryset.model
    names = [f.attname for f in model._meta.concrete_fields if f.editable]
    count = queryset.count()
    if count > AUDIT_DELETES_ITEMIZED:
        AuditEntry.objects.create(
            user=user,
            username=user.get_username(),
            action=AuditAction.DELETE,
            model=model._meta.label,
            object_id=0,
            object_repr=f"{count} {model._meta.verbose_name_plural}",
            changes={"count": count},
        )
        return
    AuditEntry.objects.bulk_create(
        [
            AuditEntry(
                user=user,
                username=user.get_username(),
                action=AuditAction.DELETE,
                model=model._meta.label,
                object_id=obj.pk,
                object_repr=str(obj)[:255],
                changes={name: [_jsonable(getattr(obj, name)), None] for name in names},
            )
            for obj in queryset.order_by("pk")
        ]
    )


# --- elections ------------------------------------------------------------------------------


# The election's fields its counts depend on: a moved voting window changes every velocity
# and the outside-window anomalies, another zone every local hour.
ELECTION_COUNTED_FIELDS = ("starts_at", "ends_at", "timezone")


def election_save(*, election: Election, user=None) -> Election:
    """Create or save an edited election. A new election gets its first, empty, figures and
    a moved window or zone a recount of the whole election; any other edit (a name) changes
    no count, only what its figures show, so it is announced with no buckets (a national
    election is not recounted for a typo). Audited when ``user`` is given."""
    with transaction.atomic():
        if election.pk is not None:
            elections_lock_for_writes(election_ids={election.pk})
        before = _stored_values(election)
        election.full_clean()
        election.save()
        _audit(user=user, instance=election, before=before)
        recount = before is None or any(before[name] != getattr(election, name) for name in ELECTION_COUNTED_FIELDS)
        buckets_changed.send(sender=Election, election_id=election.id, buckets={WHOLE_ELECTION} if recount else set())
    return election


def elections_delete(*, queryset: QuerySet, user=None) -> int:
    """Delete elections with everything they own (cascades); certified ones are refused.

    Nothing is announced: no figure of a deleted election survives, and readers anchor
    their cached figures in rows the cascade removes."""
    with transaction.atomic():
        elections_lock_for_writes(election_ids=queryset.values_list("id", flat=True))
        if user is not None:
            _audit_deletes(user=user, queryset=queryset)
        deleted, _ = queryset.delete()
    return deleted


def election_certify(*, election_id: int, user) -> Election:
    """Certify: the count is final. Every later write to the election is refused (409)."""
    with transaction.atomic():
        election = Election.objects.select_for_update().get(pk=election_id)
        if election.certified_at is not None:
            raise ElectionCertified(f"Election {election.code} is already certified.")
        election.certified_at, election.certified_by = timezone.now(), user
        election.save(update_fields=["certified_at", "certified_by"])
        CertificationEvent.objects.create(election=election, action=CertificationAction.CERTIFY, user=user)
        # Its figures now carry the certification (and their snapshot hash); no count changed.
        buckets_changed.send(sender=Election, election_id=election.id, buckets=set())
    return election


def election_uncertify(*, election_id: int, user, reason: str) -> Election:
    """Lift a certification; needs a reason, which is logged with who and when."""
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("A reason is required to un-certify an election.")
    with transaction.atomic():
        election = Election.objects.select_for_update().get(pk=election_id)
        if election.certified_at is None:
            raise ElectionCertified(f"Election {election.code} is not certified.")
        election.certified_at, election.certified_by = None, None
        election.save(update_fields=["certified_at", "certified_by"])
        CertificationEvent.objects.create(
            election=election, action=CertificationAction.UNCERTIFY, user=user, reason=reason
        )
        buckets_changed.send(sender=Election, election_id=election.id, buckets=set())
    return election


# --- constituencies -------------------------------------------------------------------------


def constituency_save(*, constituency: Constituency, user=None) -> Constituency:
    """Create or save an edited constituency (an edit writes its editable fields only).
    Registered voters feed every participation rate and turnout anomaly of it; a name shows
    in its figures. Audited when ``user`` is given."""
    with transaction.atomic():
        elections_lock_for_writes(election_ids={constituency.election_id})
        before = _stored_values(constituency)
        constituency.full_clean()
        constituency.save()
        _audit(user=user, instance=constituency, before=before)
        buckets_changed.send(
            sender=Constituency, election_id=constituency.election_id, buckets={(constituency.id, EVERY_HOUR)}
        )
    return constituency


def constituencies_upsert(*, election_id: int, wanted: Mapping[str, tuple[str, int]]) -> tuple[int, int]:
    """Create or update the election's constituencies by code: {code: (name, registered
    voters)}; returns (created, updated). Set-based, one database transaction."""
    with transaction.atomic():
        elections_lock_for_writes(election_ids={election_id})
        stored = _constituencies_by_code(election_id)
        new, changed = [], []
        for code, (name, voters) in wanted.items():
            current = stored.get(code)
            if current is None:
                new.append((election_id, code, name, voters, *_NO_FIGURES))
            elif current[1:] != (name, voters):
                changed.append((current[0], name, voters))
        # Set-based on every database (COPY and unnest on PostgreSQL): an import of a
        # national election creates a hundred thousand constituencies at once.
        bulk_sql.rows_insert(Constituency, _NEW_CONSTITUENCY_FIELDS, new)
        bulk_sql.rows_update(Constituency, ["name", "registered_voters"], changed)
        if new or changed:
            created = {code for _, code, *_ in new}
            created_ids = [pk for code, (pk, _, _) in _constituencies_by_code(election_id).items() if code in created]
            buckets = {(pk, EVERY_HOUR) for pk in [*created_ids, *(pk for pk, _, _ in changed)]}
            buckets_changed.send(sender=Constituency, election_id=election_id, buckets=buckets)
    return len(new), len(changed)


# A new constituency's figures before its first recompute (the columns have no database default).
_NEW_CONSTITUENCY_FIELDS = (
    "election",
    "code",
    "name",
    "registered_voters",
    "total_bulletins_issued",
    "total_votes_cast",
    "total_transactions",
    "total_anomalies",
    "participation_rate",
    "anomaly_score",
)
_NO_FIGURES = (0, 0, 0, 0, 0.0, 0.0)


def _constituencies_by_code(election_id: int) -> dict[str, tuple[int, str, int]]:
    return {
        code: (pk, name, voters)
        for pk, code, name, voters in Constituency.objects.filter(election_id=election_id)
        .values_list("id", "code", "name", "registered_voters")
        .order_by()
    }


def constituencies_delete(*, queryset: QuerySet, user=None) -> int:
    """Delete constituencies with their transactions. The remaining constituencies' spikes
    were judged against the deleted ones and the election's totals counted them: their
    elections are announced whole. Audited when ``user`` is given."""
    with transaction.atomic():
        election_ids = set(queryset.values_list("election_id", flat=True).distinct().order_by())
        elections_lock_for_writes(election_ids=election_ids)
        if user is not None:
            _audit_deletes(user=user, queryset=queryset)
        deleted, _ = queryset.delete()
        for election_id in sorted(election_ids):
            buckets_changed.send(sender=Constituency, election_id=election_id, buckets={WHOLE_ELECTION})
    return deleted


def ingest_scope_check(*, user, rows: Sequence[TransactionRow] = (), election_id: int | None = None) -> None:
    """Refuse (OutOfScope) a write outside the elections or constituencies the user's
    credential is limited to (IngestGrant); a user without grants is not limited. ``rows``
    are transactions; ``election_id`` a constituency to create in it (None with no rows:
    a new election, which a limited credential may not create)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return
    grants = list(IngestGrant.objects.filter(user=user).values_list("election_id", "constituency_id"))
    if not grants:
        return
    whole = {election for election, constituency in grants if constituency is None}
    places = {constituency for _, constituency in grants if constituency is not None}
    if not rows:
        if election_id is None:
            raise OutOfScope("This credential is limited to some elections and cannot create elections.")
        if election_id not in whole:
            raise OutOfScope(f"Election {election_id} is outside this credential's scope.")
        return
    for index, row in enumerate(rows):
        if row.election_id not in whole and row.constituency_id not in places:
            raise OutOfScope(
                f"Item {index}: constituency {row.constituency_id} (election {row.election_id}) is outside "
                "this credential's scope; nothing was stored."
            )


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
