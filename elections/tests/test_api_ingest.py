"""The ingest API (README, HTTP API: writes): POST elections/, constituencies/, transactions/.

Every bad input is a 4xx that names the field (and, for lists, the item) and stores nothing.
"""

import json
from datetime import datetime, timedelta

import pytest
from django.db.models import Count

from elections.models import Constituency, Election, Transaction
from elections.tests.factories import VOTING_STARTS, ConstituencyFactory, ElectionFactory, TransactionFactory
from metrics.models import DirtyBucket, HourlyStats

pytestmark = pytest.mark.django_db

ELECTIONS = "/api/elections/"
CONSTITUENCIES = "/api/constituencies/"
TRANSACTIONS = "/api/transactions/"


def stored_counts() -> tuple[int, int, int]:
    return Election.objects.count(), Constituency.objects.count(), Transaction.objects.count()


def tx(constituency, n: int = 0, **overrides) -> dict:
    item = {
        "tx_hash": f"0xapi{n:060x}",
        "constituency": constituency.id,
        "kind": "vote_cast",
        "timestamp": (VOTING_STARTS + timedelta(minutes=10 + n)).isoformat(),
        "block_number": 1000 + n,
    }
    item.update(overrides)
    return item


def election_payload(**overrides) -> dict:
    payload = {
        "code": "duma-2026",
        "name": "State Duma 2026",
        "timezone": "Asia/Kolkata",
        "starts_at": "2026-09-18T08:00:00+05:30",
        "ends_at": "2026-09-20T20:00:00+05:30",
    }
    payload.update(overrides)
    return payload


# --- happy paths ---------------------------------------------------------------------------


def test_post_election_answers_201_with_its_id_and_stores_it(ingest_client):
    response = ingest_client.post(ELECTIONS, election_payload(), format="json")

    assert response.status_code == 201, response.data
    stored = Election.objects.get(pk=response.data["id"])
    assert stored.code == "duma-2026"
    assert stored.starts_at.isoformat() == "2026-09-18T02:30:00+00:00"
    assert response.data["status"] in {"scheduled", "active", "closed"}


def test_post_constituency_answers_201_with_its_id_and_stores_it(ingest_client, election):
    payload = {"election": election.id, "code": "c-001", "name": "Central", "registered_voters": 2500}

    response = ingest_client.post(CONSTITUENCIES, payload, format="json")

    assert response.status_code == 201, response.data
    stored = Constituency.objects.get(pk=response.data["id"])
    assert (stored.election_id, stored.code, stored.registered_voters) == (election.id, "c-001", 2500)


def test_single_transaction_is_201_then_200_with_the_stored_object(ingest_client, constituencies):
    item = tx(constituencies[0], 1)

    first = ingest_client.post(TRANSACTIONS, item, format="json")
    # The same tx_hash with the same content: a duplicate, answered with the stored row.
    second = ingest_client.post(TRANSACTIONS, item, format="json")
    # With other content: a conflict, named, and the stored row is untouched.
    third = ingest_client.post(TRANSACTIONS, {**item, "kind": "bulletin_issued"}, format="json")

    assert first.status_code == 201, first.data
    assert second.status_code == 200, second.data
    assert second.data == first.data
    assert third.status_code == 409, third.data
    assert third.data["conflicts"] == [{"index": 0, "tx_hash": item["tx_hash"], "fields": ["kind"]}]
    stored = Transaction.objects.get(tx_hash=item["tx_hash"])
    assert first.data["id"] == stored.id
    assert (stored.kind, stored.block_number, stored.election_id) == ("vote_cast", 1001, constituencies[0].election_id)
    # Moscow is whole-hour: 05:11 UTC lies in the local hour starting 05:00 UTC.
    assert stored.hour == VOTING_STARTS


def test_single_transaction_with_matching_election_is_accepted(ingest_client, constituencies):
    item = tx(constituencies[0], 2, election=constituencies[0].election_id)

    response = ingest_client.post(TRANSACTIONS, item, format="json")

    assert response.status_code == 201, response.data
    assert response.data["election"] == constituencies[0].election_id


def test_list_counts_created_and_duplicates_inside_the_list_and_already_stored(ingest_client, constituencies):
    first = tx(constituencies[0], 0)
    already = TransactionFactory(
        constituency=constituencies[0],
        tx_hash=first["tx_hash"],
        kind=first["kind"],
        timestamp=datetime.fromisoformat(first["timestamp"]),
    )
    items = [tx(constituencies[i % 3], i) for i in range(6)]  # item 0 is already stored
    items.append(dict(items[3]))  # a repeat inside the list

    response = ingest_client.post(TRANSACTIONS, items, format="json")

    assert response.status_code == 201, response.data
    assert response.data == {"created": 5, "duplicates": 2}
    assert Transaction.objects.count() == 6
    assert Transaction.objects.get(tx_hash=already.tx_hash).id == already.id


def test_list_ingest_updates_the_hourly_stats_after_commit(
    ingest_client, constituencies, django_capture_on_commit_callbacks
):
    items = [tx(constituencies[0], i) for i in range(3)] + [tx(constituencies[1], 10, kind="bulletin_issued")]

    with django_capture_on_commit_callbacks(execute=True):
        response = ingest_client.post(TRANSACTIONS, items, format="json")

    assert response.status_code == 201
    rows = {r.constituency_id: r for r in HourlyStats.objects.all()}
    assert (rows[constituencies[0].id].votes_cast, rows[constituencies[0].id].transaction_count) == (3, 3)
    assert rows[constituencies[1].id].bulletins_issued == 1
    assert not DirtyBucket.objects.exists()


def test_list_of_exactly_the_limit_is_accepted(ingest_client, constituencies, settings):
    settings.INGEST_MAX_BATCH = 5

    response = ingest_client.post(TRANSACTIONS, [tx(constituencies[0], i) for i in range(5)], format="json")

    assert response.status_code == 201
    assert response.data == {"created": 5, "duplicates": 0}


@pytest.mark.slow
def test_list_of_ten_thousand_long_hashes_is_accepted(
    ingest_client, constituencies, django_capture_on_commit_callbacks
):
    """The documented maximum must fit in one request (body size limits included)."""
    items = [tx(constituencies[i % 6], i, tx_hash=f"{i:0128x}") for i in range(10_000)]

    with django_capture_on_commit_callbacks(execute=True):
        response = ingest_client.post(TRANSACTIONS, items, format="json")

    assert response.status_code == 201, response.content[:300]
    assert response.data == {"created": 10_000, "duplicates": 0}
    totals = dict(
        HourlyStats.objects.values("constituency_id").annotate(n=Count("id")).values_list("constituency_id", "n")
    )
    assert sum(HourlyStats.objects.values_list("transaction_count", flat=True)) == 10_000
    assert set(totals) == {c.id for c in constituencies}


# --- authentication and permission ---------------------------------------------------------


@pytest.mark.parametrize("url", [ELECTIONS, CONSTITUENCIES, TRANSACTIONS])
def test_writes_without_a_token_are_refused(api_client, url, constituencies):
    before = stored_counts()

    response = api_client.post(url, tx(constituencies[0]) if url == TRANSACTIONS else election_payload(), format="json")

    assert response.status_code in (401, 403)
    assert stored_counts() == before


@pytest.mark.parametrize("url", [ELECTIONS, CONSTITUENCIES, TRANSACTIONS])
def test_writes_with_a_token_without_ingest_permission_are_forbidden(reader_client, url, constituencies):
    before = stored_counts()

    response = reader_client.post(
        url, tx(constituencies[0]) if url == TRANSACTIONS else election_payload(), format="json"
    )

    assert response.status_code == 403
    assert stored_counts() == before


def test_an_invalid_token_is_refused(api_client, constituencies):
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = api_client.post(TRANSACTIONS, tx(constituencies[0]), format="json")

    assert response.status_code == 401
    assert not Transaction.objects.exists()


def test_staff_may_ingest(staff_client, constituencies):
    response = staff_client.post(TRANSACTIONS, tx(constituencies[0]), format="json")

    assert response.status_code == 201


# --- bad transactions: 400 naming the field, nothing stored --------------------------------

# Each case: (id, how to change a valid item, the field the answer must name).
BAD_TRANSACTIONS = [
    ("unknown-kind", {"kind": "vote_casted"}, "kind"),
    ("kind-not-a-string", {"kind": ["vote_cast"]}, "kind"),
    ("missing-kind", {"kind": None}, "kind"),
    ("naive-timestamp", {"timestamp": "2024-09-06T10:00:00"}, "timestamp"),
    ("unparsable-timestamp", {"timestamp": "yesterday at noon"}, "timestamp"),
    ("date-only-timestamp", {"timestamp": "2024-09-06"}, "timestamp"),
    ("numeric-timestamp", {"timestamp": 1725598800}, "timestamp"),
    ("missing-timestamp", {"timestamp": None}, "timestamp"),
    ("timestamp-out-of-range", {"timestamp": "0001-01-01T00:10:00+05:00"}, "timestamp"),
    ("missing-tx-hash", {"tx_hash": None}, "tx_hash"),
    ("empty-tx-hash", {"tx_hash": ""}, "tx_hash"),
    ("blank-tx-hash", {"tx_hash": "   "}, "tx_hash"),
    ("overlong-tx-hash", {"tx_hash": "a" * 129}, "tx_hash"),
    ("numeric-tx-hash", {"tx_hash": 12345}, "tx_hash"),
    ("nul-in-tx-hash", {"tx_hash": "0xabc\x00def"}, "tx_hash"),
    ("unknown-constituency", {"constituency": 987654}, "constituency"),
    ("non-numeric-constituency", {"constituency": "c0001"}, "constituency"),
    ("fractional-constituency", {"constituency": 1.5}, "constituency"),
    ("huge-constituency", {"constituency": 10**20}, "constituency"),
    ("missing-constituency", {"constituency": None}, "constituency"),
    ("negative-block-number", {"block_number": -1}, "block_number"),
    ("fractional-block-number", {"block_number": 12.5}, "block_number"),
    ("text-block-number", {"block_number": "twelve"}, "block_number"),
    ("boolean-block-number", {"block_number": True}, "block_number"),
    ("block-number-over-64-bits", {"block_number": 2**63}, "block_number"),
]


def _apply(item: dict, change: dict) -> dict:
    item = dict(item)
    for key, value in change.items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


@pytest.mark.parametrize(("change", "field"), [c[1:] for c in BAD_TRANSACTIONS], ids=[c[0] for c in BAD_TRANSACTIONS])
def test_bad_single_transaction_is_400_naming_the_field_and_stores_nothing(
    ingest_client, constituencies, change, field
):
    before = stored_counts()

    response = ingest_client.post(TRANSACTIONS, _apply(tx(constituencies[0]), change), format="json")

    assert response.status_code == 400, response.content
    assert field in response.data, response.data
    assert stored_counts() == before
    assert not DirtyBucket.objects.exists()


@pytest.mark.parametrize(("change", "field"), [c[1:] for c in BAD_TRANSACTIONS], ids=[c[0] for c in BAD_TRANSACTIONS])
def test_list_with_only_item_7_bad_is_400_naming_index_and_field_and_stores_nothing(
    ingest_client, constituencies, change, field
):
    items = [tx(constituencies[i % 6], i) for i in range(12)]
    items[7] = _apply(items[7], change)
    before = stored_counts()

    response = ingest_client.post(TRANSACTIONS, items, format="json")

    assert response.status_code == 400, response.content
    assert [(e["index"], e["field"]) for e in response.data["errors"]] == [(7, field)]
    assert "Item 7" in response.data["detail"]
    assert stored_counts() == before
    assert not DirtyBucket.objects.exists()


def test_constituency_of_another_election_is_400_naming_election(ingest_client, constituencies):
    other = ConstituencyFactory(election=ElectionFactory())
    item = tx(other, election=constituencies[0].election_id)
    before = stored_counts()

    single = ingest_client.post(TRANSACTIONS, item, format="json")
    listed = ingest_client.post(TRANSACTIONS, [tx(constituencies[0], 1), item], format="json")

    assert single.status_code == 400
    assert "election" in single.data
    assert listed.status_code == 400
    assert listed.data["errors"] == [{"index": 1, "field": "election", "message": listed.data["errors"][0]["message"]}]
    assert stored_counts() == before


def test_list_reports_every_bad_item_with_its_index(ingest_client, constituencies):
    items = [tx(constituencies[0], i) for i in range(5)]
    items[1]["kind"] = "nope"
    items[4]["timestamp"] = "2024-09-06T10:00:00"

    response = ingest_client.post(TRANSACTIONS, items, format="json")

    assert response.status_code == 400
    assert [(e["index"], e["field"]) for e in response.data["errors"]] == [(1, "kind"), (4, "timestamp")]
    assert not Transaction.objects.exists()


def test_list_over_the_limit_is_400_and_stores_nothing(ingest_client, constituencies, settings):
    settings.INGEST_MAX_BATCH = 5

    response = ingest_client.post(TRANSACTIONS, [tx(constituencies[0], i) for i in range(6)], format="json")

    assert response.status_code == 400
    assert "At most 5" in response.data["non_field_errors"][0]
    assert not Transaction.objects.exists()


def test_list_over_the_real_limit_of_ten_thousand_is_400(ingest_client, constituencies):
    items = [{"tx_hash": f"h{i}", "constituency": constituencies[0].id, "kind": "other"} for i in range(10_001)]

    response = ingest_client.post(TRANSACTIONS, items, format="json")

    assert response.status_code == 400
    assert "10000" in response.data["non_field_errors"][0]
    assert not Transaction.objects.exists()


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("[]", "non_field_errors"),
        ('"just a string"', "non_field_errors"),
        ("42", "non_field_errors"),
        ("null", "non_field_errors"),
        ('{"tx_hash": "0x1", ', "detail"),  # invalid JSON
        ("[1, 2, 3]", "errors"),  # non-object items
    ],
    ids=["empty-list", "string-body", "number-body", "null-body", "invalid-json", "non-object-items"],
)
def test_malformed_body_is_400_and_stores_nothing(ingest_client, constituencies, body, key):
    response = ingest_client.post(TRANSACTIONS, body, content_type="application/json")

    assert response.status_code == 400, response.content
    assert key in response.data
    assert not Transaction.objects.exists()


def test_non_object_item_is_named_by_its_index(ingest_client, constituencies):
    items = [tx(constituencies[0], 0), "0xdeadbeef", tx(constituencies[0], 2)]

    response = ingest_client.post(TRANSACTIONS, items, format="json")

    assert response.status_code == 400
    assert [(e["index"], e["field"]) for e in response.data["errors"]] == [(1, "non_field_errors")]
    assert not Transaction.objects.exists()


def test_invalid_json_says_so(ingest_client, constituencies):
    response = ingest_client.post(TRANSACTIONS, b"[{'single': 'quotes'}]", content_type="application/json")

    assert response.status_code == 400
    assert "JSON" in str(response.data["detail"])
    assert not Transaction.objects.exists()


# --- bad elections and constituencies ------------------------------------------------------

BAD_ELECTIONS = [
    ("naive-starts-at", {"starts_at": "2026-09-18T08:00:00"}, "starts_at"),
    ("unparsable-ends-at", {"ends_at": "the day after"}, "ends_at"),
    ("ends-before-starts", {"ends_at": "2026-09-17T08:00:00+05:30"}, "ends_at"),
    ("ends-equal-starts", {"ends_at": "2026-09-18T08:00:00+05:30"}, "ends_at"),
    ("unknown-timezone", {"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ("offset-not-a-timezone", {"timezone": "+03:00"}, "timezone"),
    ("empty-code", {"code": ""}, "code"),
    ("code-not-a-slug", {"code": "duma 2026!"}, "code"),
    ("missing-name", {"name": None}, "name"),
    ("starts-at-out-of-range", {"starts_at": "0001-01-01T00:00:00+05:00"}, "starts_at"),
]


@pytest.mark.parametrize(("change", "field"), [c[1:] for c in BAD_ELECTIONS], ids=[c[0] for c in BAD_ELECTIONS])
def test_bad_election_is_400_naming_the_field_and_stores_nothing(ingest_client, change, field):
    before = stored_counts()

    response = ingest_client.post(ELECTIONS, _apply(election_payload(), change), format="json")

    assert response.status_code == 400, response.content
    assert field in response.data, response.data
    assert stored_counts() == before


def test_duplicate_election_code_is_400_naming_code(ingest_client, election):
    before = stored_counts()

    response = ingest_client.post(ELECTIONS, election_payload(code=election.code), format="json")

    assert response.status_code == 400
    assert "code" in response.data
    assert stored_counts() == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"registered_voters": 0}, "registered_voters"),
        ({"registered_voters": -5}, "registered_voters"),
        ({"registered_voters": 12.5}, "registered_voters"),
        ({"registered_voters": 2**31}, "registered_voters"),
        ({"registered_voters": None}, "registered_voters"),
        ({"election": 987654}, "election"),
        ({"election": "test-election"}, "election"),
        ({"election": None}, "election"),
        ({"code": ""}, "code"),
    ],
    ids=[
        "zero-voters",
        "negative-voters",
        "fractional-voters",
        "voters-over-32-bits",
        "missing-voters",
        "unknown-election",
        "election-by-code",
        "missing-election",
        "empty-code",
    ],
)
def test_bad_constituency_is_400_naming_the_field_and_stores_nothing(ingest_client, election, change, field):
    payload = {"election": election.id, "code": "c-001", "name": "Central", "registered_voters": 2500}
    before = stored_counts()

    response = ingest_client.post(CONSTITUENCIES, _apply(payload, change), format="json")

    assert response.status_code == 400, response.content
    assert field in response.data, response.data
    assert stored_counts() == before


def test_duplicate_constituency_code_in_the_same_election_is_400_naming_code(ingest_client, constituencies):
    existing = constituencies[0]
    payload = {"election": existing.election_id, "code": existing.code, "name": "Twin", "registered_voters": 10}
    before = stored_counts()

    response = ingest_client.post(CONSTITUENCIES, payload, format="json")

    assert response.status_code == 400
    assert "code" in json.dumps(response.data)
    assert stored_counts() == before


def test_same_constituency_code_in_another_election_is_fine(ingest_client, constituencies):
    other = ElectionFactory()
    payload = {"election": other.id, "code": constituencies[0].code, "name": "Twin", "registered_voters": 10}

    response = ingest_client.post(CONSTITUENCIES, payload, format="json")

    assert response.status_code == 201, response.data


# --- the list endpoints next to ingest -------------------------------------------------------


@pytest.mark.parametrize("url", [CONSTITUENCIES, TRANSACTIONS])
@pytest.mark.parametrize("value", ["abc", "0", "100000000000000000000"])
def test_list_filters_with_a_bad_id_are_400(api_client, url, value):
    response = api_client.get(url, {"election": value})

    assert response.status_code == 400
    assert "election" in response.data


def test_transaction_list_filters_by_constituency(api_client, constituencies):
    TransactionFactory(constituency=constituencies[0])
    mine = TransactionFactory(constituency=constituencies[1])

    response = api_client.get(TRANSACTIONS, {"constituency": constituencies[1].id})

    assert response.status_code == 200
    assert [item["id"] for item in response.data["results"]] == [mine.id]
