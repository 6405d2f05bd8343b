"""Bad input to the read endpoints: a 400 naming the parameter and the problem, or a 404
naming the missing object; never a 500."""

import pytest
from django.urls import reverse

from elections.tests.factories import ConstituencyFactory, ElectionFactory

pytestmark = pytest.mark.django_db

TP = "constituency-time-period"
HS_C = "hourly-stats-constituency"
HS_E = "hourly-stats-election"

# (route, path kwargs, query, status, field holding the message, words the message must hold)
# E / C are a real election and constituency; C2 a constituency of another election.
CASES = [
    (TP, {"constituency_id": "C"}, {}, 400, "period", "required"),
    (TP, {"constituency_id": "C"}, {"period": "year"}, 400, "period", "'year' is not a valid period"),
    (TP, {"constituency_id": "C"}, {"period": "Day"}, 400, "period", "hour, day, week, month"),
    (
        TP,
        {"constituency_id": "C"},
        {"period": "day", "start_time": "2024-09-06T05:00:00"},
        400,
        "start_time",
        "no UTC offset",
    ),
    (TP, {"constituency_id": "C"}, {"period": "day", "end_time": "2024-09-06 05:00"}, 400, "end_time", "no UTC offset"),
    (TP, {"constituency_id": "C"}, {"period": "day", "start_time": "yesterday"}, 400, "start_time", "wrong format"),
    (
        TP,
        {"constituency_id": "C"},
        {"period": "day", "start_time": "2024-13-01T00:00:00Z"},
        400,
        "start_time",
        "wrong format",
    ),
    (
        TP,
        {"constituency_id": "C"},
        {"period": "day", "start_time": "2024-09-07T00:00:00Z", "end_time": "2024-09-06T00:00:00Z"},
        400,
        "start_time",
        "must not be after end_time",
    ),
    (TP, {"constituency_id": "999999"}, {"period": "day"}, 404, "detail", "No constituency with id 999999"),
    (TP, {"constituency_id": "abc"}, {"period": "day"}, 400, "constituency_id", "'abc' is not a valid constituency id"),
    (
        HS_E,
        {"election_id": "E"},
        {"start_time": "2024-09-07T00:00:00+03:00", "end_time": "2024-09-06T00:00:00+03:00"},
        400,
        "start_time",
        "must not be after end_time",
    ),
    (HS_E, {"election_id": "E"}, {"end_time": "2024-09-06T05:00:00"}, 400, "end_time", "no UTC offset"),
    (HS_E, {"election_id": "999999"}, {}, 404, "detail", "No election with id 999999"),
    (HS_E, {"election_id": "1.5"}, {}, 400, "election_id", "not a valid election id"),
    (HS_C, {"constituency_id": "999999"}, {}, 404, "detail", "No constituency with id 999999"),
    (HS_C, {"constituency_id": "C"}, {"start_time": "not-a-date"}, 400, "start_time", "wrong format"),
    (HS_C, {"constituency_id": "C"}, {"page_size": "0"}, 400, "page_size", "from 1 to 1000"),
    (HS_C, {"constituency_id": "C"}, {"page_size": "1001"}, 400, "page_size", "from 1 to 1000"),
    (HS_C, {"constituency_id": "C"}, {"page_size": "many"}, 400, "page_size", "integer"),
    (HS_C, {"constituency_id": "C"}, {"page": "999"}, 404, "detail", "Invalid page"),
    ("constituency-metrics", {"constituency_id": "999999"}, {}, 404, "detail", "No constituency with id 999999"),
    ("constituency-metrics", {"constituency_id": "xyz"}, {}, 400, "constituency_id", "'xyz' is not a valid"),
    ("constituency-metrics", {"constituency_id": "0"}, {}, 400, "constituency_id", "positive integers"),
    ("election-metrics", {"election_id": "999999"}, {}, 404, "detail", "No election with id 999999"),
    ("election-metrics", {"election_id": "abc"}, {}, 400, "election_id", "'abc' is not a valid election id"),
    ("election-metrics", {"election_id": "1" + "0" * 20}, {}, 404, "detail", "No election with id 1" + "0" * 20),
    # Either side of the largest id: the views' fast path for plain ids stops exactly there.
    ("election-metrics", {"election_id": str(2**63 - 1)}, {}, 404, "detail", f"No election with id {2**63 - 1}"),
    ("election-metrics", {"election_id": str(2**63)}, {}, 404, "detail", f"No election with id {2**63}"),
    ("election-constituencies", {"election_id": "999999"}, {}, 404, "detail", "No election with id 999999"),
    (
        "election-constituencies",
        {"election_id": "E"},
        {"ordering": "votes"},
        400,
        "ordering",
        "'votes' is not a valid ordering",
    ),
    (
        "election-constituencies",
        {"election_id": "E"},
        {"ordering": "--anomaly_score"},
        400,
        "ordering",
        "not a valid ordering",
    ),
    ("election-constituencies", {"election_id": "E"}, {"page_size": "5000"}, 400, "page_size", "from 1 to 1000"),
    ("anomaly-list", {}, {"kind": "fraud"}, 400, "kind", "'fraud' is not a valid anomaly kind"),
    ("anomaly-list", {}, {"election": "abc"}, 400, "election", "'abc' is not a valid election id"),
    ("anomaly-list", {}, {"election": "999999"}, 400, "election", "No election with id 999999"),
    ("anomaly-list", {}, {"constituency": "999999"}, 400, "constituency", "No constituency with id 999999"),
    ("anomaly-list", {}, {"constituency": "-3"}, 400, "constituency", "positive integers"),
    ("anomaly-list", {}, {"election": "E", "constituency": "C2"}, 400, "constituency", "belongs to another election"),
    ("episode-list", {}, {"kind": "fraud"}, 400, "kind", "'fraud' is not a valid anomaly kind"),
    ("episode-list", {}, {"election": "abc"}, 400, "election", "'abc' is not a valid election id"),
    ("episode-list", {}, {"election": "999999"}, 400, "election", "No election with id 999999"),
    ("episode-list", {}, {"constituency": "999999"}, 400, "constituency", "No constituency with id 999999"),
    ("episode-list", {}, {"election": "E", "constituency": "C2"}, 400, "constituency", "belongs to another election"),
    ("episode-list", {}, {"open": "maybe"}, 400, "open", "Must be a valid boolean"),
    ("episode-list", {}, {"page": "0"}, 404, "detail", "Invalid page"),
]


@pytest.fixture
def objects():
    election = ElectionFactory()
    other = ElectionFactory()
    return {
        "E": election.id,
        "C": ConstituencyFactory(election=election).id,
        "C2": ConstituencyFactory(election=other).id,
    }


def _fill(values: dict, objects: dict) -> dict:
    return {key: str(objects.get(value, value)) for key, value in values.items()}


@pytest.mark.parametrize(
    ("route", "kwargs", "params", "status", "field", "words"),
    CASES,
    ids=[f"{c[0]}-{c[4]}-{i}" for i, c in enumerate(CASES)],
)
def test_bad_input_is_answered_with_a_clear_message(api_client, objects, route, kwargs, params, status, field, words):
    response = api_client.get(reverse(route, kwargs=_fill(kwargs, objects)), _fill(params, objects))
    assert response.status_code == status, response.content
    body = response.json()
    message = body[field] if field == "detail" else " ".join(body[field])
    assert words in message, body


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_unknown_routes_and_methods_are_not_500(api_client, objects):
    assert api_client.get("/api/metrics/nowhere/").status_code == 404
    response = api_client.post(reverse("election-metrics", kwargs={"election_id": objects["E"]}), {})
    assert response.status_code in (401, 403, 405)  # anonymous may not write; nobody may POST here
