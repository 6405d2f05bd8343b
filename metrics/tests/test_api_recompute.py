"""POST /api/metrics/recompute/: staff queue a recount of an election or one constituency
(README, How it stays correct). On the embedded default the task runs eagerly after the 202."""

import pytest
from kombu.exceptions import OperationalError as BrokerOperationalError

from elections.services import TransactionRow, transactions_ingest
from elections.tests.factories import VOTING_STARTS, ConstituencyFactory, ElectionFactory
from metrics.models import HourlyStats
from metrics.pipeline import dirty_buckets_flush_all
from metrics.tasks import recompute_election

URL = "/api/metrics/recompute/"


@pytest.fixture
def stored(election, constituencies):
    rows = [
        TransactionRow(f"rc-{i}", election.id, constituencies[i % 3].id, "vote_cast", VOTING_STARTS, None)
        for i in range(9)
    ]
    transactions_ingest(rows=rows)
    dirty_buckets_flush_all(election_id=election.id)
    return election


def test_staff_recompute_of_an_election_answers_202_and_repairs_it(staff_client, stored, stats_match):
    HourlyStats.objects.filter(election=stored).update(votes_cast=0)

    response = staff_client.post(URL, {"election": stored.id}, format="json")

    assert response.status_code == 202
    body = response.json()
    assert body["election_id"] == stored.id
    assert body["constituency_id"] is None
    assert body["task_id"]
    stats_match(stored)


def test_recompute_of_a_constituency_names_its_election(staff_client, stored, constituencies, stats_match):
    HourlyStats.objects.filter(constituency=constituencies[1]).delete()

    response = staff_client.post(URL, {"constituency": constituencies[1].id}, format="json")

    assert response.status_code == 202
    assert response.json()["election_id"] == stored.id
    assert response.json()["constituency_id"] == constituencies[1].id
    stats_match(stored)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "non_field_errors", "Give an election or a constituency."),
        ({"election": 987654}, "election", "No election with id 987654."),
        ({"constituency": 987654}, "constituency", "No constituency with id 987654."),
        ({"election": "abc"}, "election", "An election id is an integer"),
        ({"election": [1]}, "election", "An election id is an integer"),
    ],
)
def test_bad_requests_are_named_400s(staff_client, stored, body, field, message):
    response = staff_client.post(URL, body, format="json")
    assert response.status_code == 400
    assert message in " ".join(response.json()[field])


def test_a_constituency_of_another_election_is_refused(staff_client, stored):
    other = ConstituencyFactory(election=ElectionFactory(code="other"))
    response = staff_client.post(URL, {"election": stored.id, "constituency": other.id}, format="json")
    assert response.status_code == 400
    assert response.json()["constituency"] == ["This constituency belongs to another election."]


def test_only_staff_may_recompute(api_client, reader_client, ingest_client, stored):
    assert api_client.post(URL, {"election": stored.id}, format="json").status_code in (401, 403)
    assert reader_client.post(URL, {"election": stored.id}, format="json").status_code == 403
    assert ingest_client.post(URL, {"election": stored.id}, format="json").status_code == 403


def test_an_unreachable_broker_is_a_503_not_a_500(staff_client, stored, monkeypatch):
    def refuse(*args, **kwargs):
        raise BrokerOperationalError("connection refused")

    monkeypatch.setattr(recompute_election, "delay", refuse)
    response = staff_client.post(URL, {"election": stored.id}, format="json")
    assert response.status_code == 503
    assert "try again" in response.json()["detail"]
