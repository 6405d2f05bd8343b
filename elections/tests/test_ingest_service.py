"""elections.services ingest: repeats, bucket marks, the validator's edges, and the tx_hash
uniqueness as the schema holds it (a named constraint, and nothing else indexing tx_hash)."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from elections.models import Transaction, TransactionKind
from elections.services import (
    BLOCK_NUMBER_MAX,
    RowError,
    TransactionConflict,
    TransactionRow,
    parse_aware_datetime,
    transaction_row_parse,
    transactions_ingest,
)
from elections.tests.factories import VOTING_STARTS
from elections.timebuckets import hour_bucket
from metrics.models import DirtyBucket

pytestmark = pytest.mark.django_db

VOTE = TransactionKind.VOTE_CAST


def test_a_hash_repeated_within_the_rows_stores_the_first_and_marks_only_its_bucket(election, constituencies):
    first, second = constituencies[0], constituencies[1]
    rows = [
        TransactionRow("dup", election.id, first.id, VOTE, VOTING_STARTS + timedelta(minutes=5), 1),
        TransactionRow("other", election.id, first.id, VOTE, VOTING_STARTS + timedelta(minutes=6), None),
        TransactionRow("dup", election.id, first.id, VOTE, VOTING_STARTS + timedelta(minutes=5), 2),
        TransactionRow("dup", election.id, second.id, VOTE, VOTING_STARTS + timedelta(hours=2), 2),
    ]

    with pytest.raises(TransactionConflict) as refused:
        transactions_ingest(rows=rows)
    assert [(c.index, c.fields) for c in refused.value.conflicts] == [(3, ("constituency", "timestamp"))]
    assert not Transaction.objects.exists()  # all-or-nothing

    result = transactions_ingest(rows=rows, conflicts="count")

    hour = hour_bucket(VOTING_STARTS + timedelta(minutes=5), election.tz)
    assert (result.created, result.duplicates, len(result.conflicts)) == (2, 1, 1)
    assert result.buckets == {(first.id, hour)}
    stored = Transaction.objects.get(tx_hash="dup")
    assert (stored.constituency_id, stored.block_number) == (first.id, 1)
    assert set(DirtyBucket.objects.values_list("constituency_id", "hour")) == {(first.id, hour)}
    assert list(Transaction.objects.order_by("id").values_list("tx_hash", flat=True)) == ["dup", "other"]


def test_rows_that_are_all_stored_already_mark_nothing(election, constituencies):
    row = TransactionRow("once", election.id, constituencies[0].id, VOTE, VOTING_STARTS, None)
    transactions_ingest(rows=[row])
    DirtyBucket.objects.all().delete()

    result = transactions_ingest(rows=[row, row])

    assert (result.created, result.duplicates, result.buckets) == (0, 2, set())
    assert not DirtyBucket.objects.exists()


def test_buckets_are_counted_per_constituency_and_local_hour(election, constituencies):
    at = VOTING_STARTS + timedelta(minutes=1)
    rows = [TransactionRow(f"b{i}", election.id, constituencies[i % 2].id, VOTE, at + timedelta(minutes=90 * (i // 2)), None) for i in range(6)]  # fmt: skip

    result = transactions_ingest(rows=rows)

    assert result.created == 6
    assert result.buckets == {(row.constituency_id, hour_bucket(row.timestamp, election.tz)) for row in rows}


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("0002-01-01T12:00:00+00:00", True),
        ("0002-01-01T00:10:00+05:00", False),  # year 1 in UTC
        ("0003-01-01T00:10:00+05:00", True),  # year 2 in UTC
        ("9998-12-31T12:00:00+00:00", True),
        ("9998-12-31T23:00:00-05:00", False),  # year 9999 in UTC
        ("9997-12-31T23:00:00-05:00", True),
        ("0001-01-01T00:10:00+05:00", False),  # cannot even be shown in UTC
        ("9999-12-31T23:00:00-05:00", False),
    ],
)
def test_timestamps_near_the_calendars_edges_are_judged_in_utc(value, ok):
    if ok:
        assert parse_aware_datetime(value).isoformat().startswith(value[:10])
    else:
        with pytest.raises(RowError, match="out of range"):
            parse_aware_datetime(value)


def test_a_naive_timestamp_is_refused():
    with pytest.raises(RowError, match="no UTC offset"):
        parse_aware_datetime("2026-09-20T10:00:00")


@pytest.mark.parametrize(
    ("block_number", "expected"),
    [(None, None), ("", None), (0, 0), (BLOCK_NUMBER_MAX, BLOCK_NUMBER_MAX), ("12", 12), (12.0, 12),
     (-1, "non-negative 64-bit"), (BLOCK_NUMBER_MAX + 1, "non-negative 64-bit"), (True, "non-negative integer"),
     (12.5, "non-negative integer"), ("x", "non-negative integer"), ([1], "non-negative integer")],
)  # fmt: skip
def test_block_numbers(constituencies, block_number, expected):
    raw = {"tx_hash": "h", "constituency": constituencies[0].id, "kind": "vote_cast",
           "timestamp": "2024-09-06T10:00:00Z", "block_number": block_number}  # fmt: skip
    lookup = {constituencies[0].id: constituencies[0]}.get
    if isinstance(expected, str):
        with pytest.raises(RowError, match=expected) as error:
            transaction_row_parse(raw, constituency_lookup=lookup)
        assert error.value.field == "block_number"
    else:
        assert transaction_row_parse(raw, constituency_lookup=lookup).block_number == expected


@pytest.mark.parametrize("kind", [["vote_cast"], {"a": 1}, 1, None, "VOTE_CAST"])
def test_a_kind_that_is_not_one_of_the_choices_names_the_field(constituencies, kind):
    raw = {"tx_hash": "h", "constituency": constituencies[0].id, "kind": kind, "timestamp": "2026-09-20T10:00:00Z"}
    with pytest.raises(RowError) as error:
        transaction_row_parse(raw, constituency_lookup={constituencies[0].id: constituencies[0]}.get)
    assert error.value.field == "kind"


def tx_hash_indexes() -> dict:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Transaction._meta.db_table)
    return {name: info for name, info in constraints.items() if "tx_hash" in info["columns"]}


def test_tx_hash_is_unique_through_one_named_constraint_and_nothing_else_indexes_it(election, constituencies):
    indexes = tx_hash_indexes()

    assert list(indexes) == ["transaction_tx_hash_unique"]
    assert indexes["transaction_tx_hash_unique"]["unique"]
    row = {"election": election, "constituency": constituencies[0], "kind": VOTE, "timestamp": VOTING_STARTS}
    Transaction.objects.create(tx_hash="same", **row)
    with pytest.raises(IntegrityError), transaction.atomic():
        Transaction.objects.create(tx_hash="same", **row)


@pytest.mark.django_db(transaction=True)
def test_the_migration_to_the_named_constraint_keeps_stored_rows_and_their_uniqueness(election, constituencies):
    Transaction.objects.create(
        tx_hash="kept", election=election, constituency=constituencies[0], kind=VOTE, timestamp=VOTING_STARTS
    )
    executor = MigrationExecutor(connection)
    executor.migrate([("elections", "0001_initial")])
    before = tx_hash_indexes()
    executor = MigrationExecutor(connection)
    # Every app's leaves: going back to elections 0001 also unapplied the apps that depend
    # on later elections migrations.
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert len(before) == (2 if connection.vendor == "postgresql" else 1)  # unique and, on PostgreSQL, "_like"
    assert list(tx_hash_indexes()) == ["transaction_tx_hash_unique"]
    assert list(Transaction.objects.values_list("tx_hash", flat=True)) == ["kept"]
    with pytest.raises(IntegrityError), transaction.atomic():
        Transaction.objects.create(
            tx_hash="kept", election=election, constituency=constituencies[1], kind=VOTE, timestamp=VOTING_STARTS
        )
