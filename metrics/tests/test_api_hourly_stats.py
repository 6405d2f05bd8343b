"""GET hourly-stats/election/{id}/ and hourly-stats/constituency/{id}/: rows equal to the
reference, ordered by hour then constituency, filtered start_time <= hour < end_time, paginated."""

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from metrics.tests.test_selectors import ZONES, as_utc, ingest_and_recompute, seeded_election

pytestmark = pytest.mark.django_db

FIELDS = (
    "bulletins_issued",
    "votes_cast",
    "transaction_count",
    "bulletin_velocity",
    "vote_velocity",
    "participation_rate",
    "anomaly_count",
)


@pytest.fixture(params=sorted(ZONES))
def seeded(request):
    return seeded_election(tz=request.param)


def all_pages(client, url, params) -> list[dict]:
    rows, page = [], client.get(url, params).json()
    count = page["count"]
    while True:
        rows.extend(page["results"])
        if not page["next"]:
            break
        page = client.get(page["next"]).json()
    assert len(rows) == count
    return rows


def test_election_rows_equal_the_reference_in_hour_then_constituency_order(api_client, seeded):
    url = reverse("hourly-stats-election", kwargs={"election_id": seeded.election.id})
    rows = all_pages(api_client, url, {"page_size": 1000})
    want = sorted(seeded.expected["hourly"].items(), key=lambda item: (item[0][1], item[0][0]))
    assert [(r["constituency_id"], as_utc(r["hour"])) for r in rows] == [key for key, _ in want]
    for row, (_, expected) in zip(rows, want, strict=False):
        assert row["election_id"] == seeded.election.id
        for name in FIELDS:
            assert row[name] == pytest.approx(expected[name]), name
        assert set(row) == {"id", "election_id", "constituency_id", "hour", "timestamp", *FIELDS}


def test_hours_are_local_bucket_starts(api_client):
    seeded = seeded_election(tz="Asia/Kolkata")
    url = reverse("hourly-stats-election", kwargs={"election_id": seeded.election.id})
    rows = all_pages(api_client, url, {"page_size": 500})
    assert rows
    assert {as_utc(r["hour"]).minute for r in rows} == {30}  # +05:30: local hours start at :30 UTC


def test_a_fall_back_night_has_two_local_two_oclock_buckets(api_client):
    seeded = seeded_election(tz="Europe/Berlin")
    member = seeded.constituencies[0]
    fold = [datetime(2024, 10, 27, 0, 30, tzinfo=UTC), datetime(2024, 10, 27, 1, 30, tzinfo=UTC)]
    ingest_and_recompute(seeded.election.id, [(f"fold-{i}", member.id, "vote_cast", ts) for i, ts in enumerate(fold)])
    url = reverse("hourly-stats-constituency", kwargs={"constituency_id": member.id})
    # Local 02:00 CEST (+02:00) to local 03:00 CET (+01:00): two hours of wall clock "02".
    local_two_oclock = {"start_time": "2024-10-27T02:00:00+02:00", "end_time": "2024-10-27T03:00:00+01:00"}
    rows = all_pages(api_client, url, local_two_oclock)
    hours = [as_utc(r["hour"]) for r in rows]
    assert hours == [datetime(2024, 10, 27, 0, tzinfo=UTC), datetime(2024, 10, 27, 1, tzinfo=UTC)]
    assert [h.astimezone(seeded.election.tz).hour for h in hours] == [2, 2]


@pytest.mark.parametrize("tz", sorted(ZONES))
def test_constituency_range_is_start_inclusive_end_exclusive_with_offsets(api_client, tz):
    seeded = seeded_election(tz=tz)
    member = seeded.constituencies[2]
    hours = sorted(h for c, h in seeded.expected["hourly"] if c == member.id)
    start, end = hours[2], hours[-3]
    local = seeded.election.tz
    url = reverse("hourly-stats-constituency", kwargs={"constituency_id": member.id})
    params = {"start_time": start.astimezone(local).isoformat(), "end_time": end.astimezone(local).isoformat()}
    rows = all_pages(api_client, url, params)
    assert [as_utc(r["hour"]) for r in rows] == hours[2:-3]
    assert {r["constituency_id"] for r in rows} == {member.id}


def test_an_unencoded_plus_in_the_offset_is_understood(api_client):
    seeded = seeded_election(tz="Asia/Kolkata")
    member = seeded.constituencies[0]
    hours = sorted(h for c, h in seeded.expected["hourly"] if c == member.id)
    local = hours[3].astimezone(seeded.election.tz).isoformat()  # ...+05:30
    url = reverse("hourly-stats-constituency", kwargs={"constituency_id": member.id})
    response = api_client.get(f"{url}?start_time={local}")  # '+' arrives as a space
    assert response.status_code == 200, response.content
    assert [as_utc(r["hour"]) for r in response.json()["results"]] == hours[3:]


def test_an_empty_range_is_an_empty_page(api_client):
    seeded = seeded_election(tz="Asia/Kolkata")
    url = reverse("hourly-stats-election", kwargs={"election_id": seeded.election.id})
    body = api_client.get(url, {"start_time": "2024-03-30T00:00:00Z", "end_time": "2024-03-30T00:00:00Z"}).json()
    assert (body["count"], body["results"], body["next"], body["previous"]) == (0, [], None, None)


def test_pagination_walks_every_row_once(api_client):
    seeded = seeded_election(tz="Europe/Berlin")
    url = reverse("hourly-stats-election", kwargs={"election_id": seeded.election.id})
    first = api_client.get(url, {"page_size": 50}).json()
    assert first["count"] == len(seeded.expected["hourly"])
    assert first["previous"] is None
    assert "page=2" in first["next"]
    assert len(first["results"]) == 50
    rows = all_pages(api_client, url, {"page_size": 50})
    assert len({r["id"] for r in rows}) == len(seeded.expected["hourly"])
    assert len(api_client.get(url, {"page_size": 1000}).json()["results"]) == min(1000, first["count"])
    assert api_client.get(url).json()["results"] == rows[:100]  # default page size
