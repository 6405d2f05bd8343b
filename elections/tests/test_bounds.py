"""elections/bounds.py: election dates in 1970-2999, transaction timestamps within the slack
of their election's window, and stored rows from before the bounds never make anything 500."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse

from elections.models import Election, ElectionStatus, Transaction
from elections.tests.factories import ConstituencyFactory, ElectionFactory, TransactionFactory

pytestmark = pytest.mark.django_db

FAR_END = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)


def election_body(**overrides) -> dict:
    return {
        "code": "bounded",
        "name": "Bounded",
        "timezone": "Europe/Moscow",
        "starts_at": "2024-03-15T08:00:00+03:00",
        "ends_at": "2024-03-17T20:00:00+03:00",
        **overrides,
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ends_at", "9999-12-31T23:00:00Z"),
        ("ends_at", "3000-01-01T00:00:00Z"),
        ("starts_at", "1969-12-31T23:59:59Z"),
        ("starts_at", "0001-01-01T00:00:00Z"),
        # 2999-12-31 in Moscow is still 2999 in UTC, 3000-01-01T01:00+03:00 is 2999 too ...
        ("ends_at", "3000-01-01T04:00:00+03:00"),
    ],
)
def test_api_refuses_election_dates_outside_1970_to_2999(ingest_client, field, value):
    response = ingest_client.post("/api/elections/", election_body(**{field: value}), format="json")

    assert response.status_code == 400, response.content
    assert "1970-2999" in str(response.json()[field])
    assert not Election.objects.exists()


def test_api_accepts_the_edges_of_the_bounds(ingest_client):
    response = ingest_client.post(
        "/api/elections/",
        election_body(starts_at="1970-01-01T00:00:00Z", ends_at="2999-12-31T23:59:59Z"),
        format="json",
    )
    assert response.status_code == 201, response.content


def test_model_validation_refuses_out_of_range_dates():
    election = ElectionFactory.build(ends_at=FAR_END)
    with pytest.raises(ValidationError) as error:
        election.full_clean()
    assert "ends_at" in error.value.message_dict


def test_the_election_service_refuses_out_of_range_dates():
    from elections.services import election_save

    with pytest.raises(ValidationError) as error:
        election_save(election=ElectionFactory.build(code="far", ends_at=FAR_END))
    assert "1970-2999" in str(error.value.message_dict["ends_at"])
    assert not Election.objects.exists()


def test_admin_refuses_out_of_range_dates(admin_client):
    response = admin_client.post(
        reverse("admin:elections_election_add"),
        {
            "code": "far",
            "name": "Far",
            "timezone": "UTC",
            "starts_at_0": "2024-01-01",
            "starts_at_1": "00:00:00",
            "ends_at_0": "3001-01-01",
            "ends_at_1": "00:00:00",
        },
    )
    assert response.status_code == 200  # the form again, with its error
    assert "1970-2999" in response.content.decode()
    assert not Election.objects.exists()


# --- rows stored before the bounds ------------------------------------------------------------


@pytest.fixture
def legacy_far_election(db):
    """An election stored before the bounds existed: its end at 9999-12-31T23:00Z."""
    election = ElectionFactory(code="far", starts_at=datetime(2020, 1, 1, tzinfo=UTC))
    Election.objects.filter(pk=election.pk).update(ends_at=FAR_END)
    constituency = ConstituencyFactory(election=election)
    TransactionFactory(constituency=constituency, timestamp=datetime(2020, 1, 1, 1, tzinfo=UTC))
    call_command("backfill_metrics", "--election", "far", stdout=StringIO(), stderr=StringIO())
    election.refresh_from_db()
    return election


def test_status_of_a_far_end_is_computed_without_overflow(legacy_far_election):
    assert legacy_far_election.status == ElectionStatus.ACTIVE
    assert Election.objects.active().filter(pk=legacy_far_election.pk).exists()


def test_nothing_answers_500_for_an_election_ending_in_year_9999(admin_client, legacy_far_election):
    election = legacy_far_election
    constituency = election.constituencies.get()
    urls = [
        "/api/elections/",
        f"/api/elections/{election.id}/",
        f"/api/metrics/election/{election.id}/",
        f"/api/metrics/election/{election.id}/constituencies/",
        f"/api/metrics/constituency/{constituency.id}/",
        f"/api/metrics/constituency/{constituency.id}/time-period/?period=month",
        f"/api/hourly-stats/election/{election.id}/",
        "/api/metrics/dashboard/summary/",
        "/api/metrics/dashboard/detailed/",
        reverse("admin:elections_election_changelist"),
        reverse("admin:elections_election_changelist") + "?status=active",
        reverse("admin:elections_election_changelist") + "?status=closed",
        reverse("admin:elections_election_change", args=[election.id]),
    ]
    for url in urls:
        assert admin_client.get(url).status_code == 200, url
    body = admin_client.get(f"/api/metrics/election/{election.id}/").json()
    assert body["status"] == "active"
    assert body["total_transactions"] == 1


# --- transaction timestamps and the election window -------------------------------------------


def tx_body(constituency, timestamp: datetime, tx_hash: str = "0xbound") -> dict:
    return {
        "tx_hash": tx_hash,
        "constituency": constituency.id,
        "kind": "vote_cast",
        "timestamp": timestamp.isoformat(),
    }


def test_api_takes_timestamps_up_to_the_slack_outside_the_window(ingest_client, election, constituencies):
    slack = timedelta(days=30)
    edges = [election.starts_at - slack, election.ends_at + slack]
    for i, timestamp in enumerate(edges):
        response = ingest_client.post("/api/transactions/", tx_body(constituencies[0], timestamp, f"0x{i}"))
        assert response.status_code == 201, response.content


@pytest.mark.parametrize("side", ["before", "after"])
def test_api_refuses_a_timestamp_beyond_the_slack(ingest_client, election, constituencies, side):
    beyond = timedelta(days=30, seconds=1)
    timestamp = election.starts_at - beyond if side == "before" else election.ends_at + beyond
    response = ingest_client.post("/api/transactions/", tx_body(constituencies[0], timestamp), format="json")

    assert response.status_code == 400
    assert "30 days outside the election's voting window" in response.json()["timestamp"][0]
    assert not Transaction.objects.exists()


def test_bulk_api_names_the_item_and_field_beyond_the_slack(ingest_client, election, constituencies):
    good = [tx_body(constituencies[0], election.starts_at + timedelta(minutes=i), f"0x{i}") for i in range(3)]
    bad = tx_body(constituencies[1], election.ends_at + timedelta(days=31), "0xlate")
    response = ingest_client.post("/api/transactions/", [*good[:2], bad, good[2]], format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "index": 2,
        "field": "timestamp",
        "message": response.json()["errors"][0]["message"],
    }
    assert "Item 2 is invalid (timestamp:" in response.json()["detail"]
    assert not Transaction.objects.exists()


def test_the_slack_is_a_setting(ingest_client, election, constituencies, settings):
    settings.TRANSACTION_WINDOW_SLACK_DAYS = 1
    late = election.ends_at + timedelta(days=2)
    response = ingest_client.post("/api/transactions/", tx_body(constituencies[0], late), format="json")
    assert response.status_code == 400
    assert "1 days outside" in response.json()["timestamp"][0]


def test_admin_refuses_a_transaction_beyond_the_slack(admin_client, election, constituencies):
    response = admin_client.post(
        reverse("admin:elections_transaction_add"),
        {
            "tx_hash": "0xadmin",
            "election": election.id,
            "constituency": constituencies[0].id,
            "kind": "vote_cast",
            "timestamp_0": "2030-01-01",
            "timestamp_1": "00:00:00",
        },
    )
    assert response.status_code == 200
    assert "outside the election&#x27;s voting window" in response.content.decode()
    assert not Transaction.objects.exists()
