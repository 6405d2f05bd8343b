"""GET /api/anomalies/episodes/ (docs/METRICS.md#episodes-in-the-api-and-admin) against the reference's episodes."""

from datetime import timedelta

import pytest
from django.urls import reverse

from metrics.tests.test_selectors import ZONES, as_utc, ingest_and_recompute, seeded_election

pytestmark = pytest.mark.django_db

URL = "/api/anomalies/episodes/"


@pytest.fixture(params=sorted(ZONES))
def seeded(request):
    return seeded_election(tz=request.param, constituencies=7, seed=3)


def _identity(row: dict) -> tuple:
    return (row["constituency_id"], as_utc(row["first_hour"]), row["kind"])


def _all(client, params: dict) -> list[dict]:
    body = client.get(URL, {**params, "page_size": 1000}).json()
    assert body["count"] == len(body["results"])
    return body["results"]


def test_the_route_is_named():
    assert reverse("episode-list") == URL


def test_lists_the_reference_episodes_newest_first(api_client, seeded):
    want = seeded.expected["episodes"]
    assert want, "the generated election must have episodes to compare"
    rows = _all(api_client, {"election": seeded.election.id})
    got = {
        _identity(r): {
            "last_hour": as_utc(r["last_hour"]),
            "hours": r["hours"],
            "peak": r["peak"],
            "open": r["open"],
            "weight": r["weight"],
        }
        for r in rows
    }
    assert got == want
    assert all(r["election_id"] == seeded.election.id for r in rows)
    order = [(as_utc(r["last_hour"]), r["id"]) for r in rows]
    assert order == sorted(order, reverse=True)


def test_filters_narrow_to_what_the_reference_has(api_client, seeded):
    want = seeded.expected["episodes"]
    election = seeded.election.id
    for kind in {k for _, _, k in want}:
        rows = _all(api_client, {"election": election, "kind": kind})
        assert {_identity(r) for r in rows} == {key for key in want if key[2] == kind}
    for flag, text in ((True, "true"), (False, "false")):
        rows = _all(api_client, {"election": election, "open": text})
        assert {_identity(r) for r in rows} == {key for key, e in want.items() if e["open"] is flag}
    member = seeded.constituencies[-1]  # the small one: its turnout goes over 100 %
    rows = _all(api_client, {"constituency": member.id, "open": "1"})
    wanted = {key for key, e in want.items() if key[0] == member.id and e["open"]}
    assert wanted
    assert {_identity(r) for r in rows} == wanted


def test_without_filters_every_election_is_listed(api_client):
    first = seeded_election(tz="Europe/Berlin", constituencies=5, seed=4)
    second = seeded_election(tz="Asia/Kolkata", constituencies=5, seed=5)
    rows = _all(api_client, {})
    assert {_identity(r) for r in rows} == first.expected["episodes"].keys() | second.expected["episodes"].keys()


def test_a_recompute_invalidates_the_cached_list(api_client):
    seeded = seeded_election(tz="Europe/Berlin", constituencies=5, seed=6)
    params = {"election": seeded.election.id}
    first = api_client.get(URL, params)
    etag = first["ETag"]
    assert api_client.get(URL, params, HTTP_IF_NONE_MATCH=etag).status_code == 304
    global_etag = api_client.get(URL)["ETag"]

    # A late vote well after the polls closed: a new hour, flagged outside the window.
    member = seeded.constituencies[0]
    late = seeded.election.ends_at + timedelta(hours=3, minutes=10)
    ingest_and_recompute(seeded.election.id, [("late-episode", member.id, "vote_cast", late)])

    after = api_client.get(URL, params, HTTP_IF_NONE_MATCH=etag)
    assert after.status_code == 200
    newest = after.json()["results"][0]
    assert (newest["constituency_id"], newest["kind"], newest["open"]) == (member.id, "outside_voting_window", True)
    assert as_utc(newest["first_hour"]) <= late < as_utc(newest["first_hour"]) + timedelta(hours=1)
    assert api_client.get(URL, HTTP_IF_NONE_MATCH=global_etag).status_code == 200
