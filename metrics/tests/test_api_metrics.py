"""The metrics read endpoints over HTTP: every number against the reference, caching with
ETags, permissions and throttling, and a query budget that does not grow with the election."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from election_monitor.throttling import FailOpenAnonRateThrottle
from elections.tests.factories import ConstituencyFactory, ElectionFactory
from metrics import selectors
from metrics.cache import metrics_cache
from metrics.tests.test_selectors import ZONES, as_utc, ingest_and_recompute, seeded_election

pytestmark = pytest.mark.django_db

SUMMED = ("registered_voters", "total_bulletins_issued", "total_votes_cast", "total_transactions", "total_anomalies")


@pytest.fixture(params=sorted(ZONES))
def seeded(request):
    return seeded_election(tz=request.param)


def get_ok(client, name, params=None, **kwargs):
    response = client.get(reverse(name, kwargs=kwargs), params or {})
    assert response.status_code == 200, response.content
    return response.json()


def assert_fields(got: dict, want: dict, names) -> None:
    for name in names:
        assert got[name] == pytest.approx(want[name]), name


CONSTITUENCY_NUMBERS = (
    "registered_voters",
    "total_bulletins_issued",
    "total_votes_cast",
    "total_transactions",
    "total_anomalies",
    "participation_rate",
    "anomaly_score",
)
ELECTION_NUMBERS = (
    "registered_voters",
    "total_bulletins_issued",
    "total_votes_cast",
    "total_transactions",
    "total_anomalies",
    "participation_rate",
    "constituency_count",
    "constituencies_with_anomalies",
)


# --- numbers against the reference ---------------------------------------------------------------


def test_constituency_metrics_match_the_reference(api_client, seeded):
    for member in seeded.constituencies:
        body = get_ok(api_client, "constituency-metrics", constituency_id=member.id)
        want = seeded.expected["constituencies"][member.id]
        assert (body["constituency_id"], body["election_id"]) == (member.id, seeded.election.id)
        assert (body["code"], body["name"]) == (member.code, member.name)
        assert_fields(body, want, CONSTITUENCY_NUMBERS)
        assert body["hourly_activity"] == want["hourly_activity"]
        assert as_utc(body["computed_at"]) <= timezone.now()


@pytest.mark.parametrize("period", ["hour", "day", "week", "month"])
def test_time_period_buckets_match_the_reference(api_client, seeded, period):
    for member in seeded.constituencies:
        body = get_ok(api_client, "constituency-time-period", {"period": period}, constituency_id=member.id)
        assert (body["constituency_id"], body["period"]) == (member.id, period)
        got = [{**b, "start": as_utc(b["start"]), "end": as_utc(b["end"])} for b in body["buckets"]]
        want = seeded.rollup(member.id, period)
        assert [(b["start"], b["end"]) for b in got] == [(b["start"], b["end"]) for b in want]
        for g, w in zip(got, want, strict=False):
            assert_fields(g, w, ("bulletins_issued", "votes_cast", "transaction_count", "anomaly_count"))
            assert g["participation_rate"] == pytest.approx(w["participation_rate"])


@pytest.mark.parametrize("period", ["hour", "day"])
def test_time_period_range_is_given_in_local_offsets(api_client, seeded, period):
    tz = seeded.election.tz
    hours = sorted({h for _, h in seeded.expected["hourly"]})
    start, end = hours[len(hours) // 4], hours[3 * len(hours) // 4]
    member = seeded.constituencies[1]
    params = {
        "period": period,
        "start_time": start.astimezone(tz).isoformat(),
        "end_time": end.astimezone(tz).isoformat(),
    }
    body = get_ok(api_client, "constituency-time-period", params, constituency_id=member.id)
    want = seeded.rollup(member.id, period, start, end)
    assert want
    assert [as_utc(b["start"]) for b in body["buckets"]] == [b["start"] for b in want]
    assert [b["votes_cast"] for b in body["buckets"]] == [b["votes_cast"] for b in want]
    assert [b["participation_rate"] for b in body["buckets"]] == pytest.approx([b["participation_rate"] for b in want])


def test_election_metrics_match_the_reference(api_client, seeded):
    body = get_ok(api_client, "election-metrics", election_id=seeded.election.id)
    want = seeded.expected["election"]
    assert (body["election_id"], body["code"], body["name"]) == (
        seeded.election.id,
        seeded.election.code,
        seeded.election.name,
    )
    assert body["status"] == "closed"
    assert_fields(body, want, ELECTION_NUMBERS)
    assert [as_utc(t["hour"]) for t in body["hourly_turnout"]] == [t["hour"] for t in want["hourly_turnout"]]
    assert [t["votes_cast"] for t in body["hourly_turnout"]] == [t["votes_cast"] for t in want["hourly_turnout"]]
    assert [t["participation_rate"] for t in body["hourly_turnout"]] == pytest.approx(
        [t["participation_rate"] for t in want["hourly_turnout"]]
    )
    assert "computed_at" in body


def test_election_status_follows_the_voting_window(api_client):
    now = timezone.now()
    scheduled = ElectionFactory(starts_at=now + timedelta(days=1), ends_at=now + timedelta(days=2))
    active = ElectionFactory(starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=5))
    for election, status in ((scheduled, "scheduled"), (active, "active")):
        assert get_ok(api_client, "election-metrics", election_id=election.id)["status"] == status


@pytest.mark.parametrize("ordering", ["-anomaly_score", "participation_rate", "-total_votes_cast", "total_anomalies"])
def test_election_constituencies_are_paginated_in_the_requested_order(api_client, ordering):
    seeded = seeded_election(constituencies=9)
    name = ordering.lstrip("-")
    sign = -1 if ordering.startswith("-") else 1
    want = sorted(seeded.expected["constituencies"].items(), key=lambda item: (sign * item[1][name], item[0]))
    url = reverse("election-constituencies", kwargs={"election_id": seeded.election.id})
    got, page = [], api_client.get(url, {"ordering": ordering, "page_size": 4}).json()
    assert page["count"] == 9
    assert page["previous"] is None
    while True:
        got.extend(page["results"])
        if not page["next"]:
            break
        page = api_client.get(page["next"]).json()
    assert [row["constituency_id"] for row in got] == [cid for cid, _ in want]
    for row, (_, expected) in zip(got, want, strict=False):
        assert_fields(row, expected, CONSTITUENCY_NUMBERS)
        assert "hourly_activity" not in row


def test_dashboards_sum_over_every_election(api_client):
    first = seeded_election(tz="Asia/Kolkata", seed=5)
    second = seeded_election(tz="Europe/Berlin", seed=6)
    elections = [first.expected["election"], second.expected["election"]]
    summary = get_ok(api_client, "dashboard-summary")
    assert (summary["elections"], summary["active_elections"], summary["constituencies"]) == (2, 0, 12)
    for name in SUMMED:
        assert summary[name] == sum(e[name] for e in elections), name
    votes = sum(e["total_votes_cast"] for e in elections)
    assert summary["participation_rate"] == pytest.approx(100.0 * votes / summary["registered_voters"])

    detailed = get_ok(api_client, "dashboard-detailed")
    assert {k: v for k, v in detailed["summary"].items() if k != "computed_at"} == {
        k: v for k, v in summary.items() if k != "computed_at"
    }
    for body, want in zip(detailed["elections"], elections, strict=False):
        assert_fields(body, want, ELECTION_NUMBERS)
        assert len(body["hourly_turnout"]) == len(want["hourly_turnout"])
    scores = {
        cid: c["anomaly_score"] for seeded in (first, second) for cid, c in seeded.expected["constituencies"].items()
    }
    top = sorted(scores, key=lambda cid: (-scores[cid], cid))[:10]
    assert [c["constituency_id"] for c in detailed["top_anomalous_constituencies"]] == top
    latest = max(h for seeded in (first, second) for (_, h, _) in seeded.expected["anomalies"])
    assert as_utc(detailed["recent_anomalies"][0]["hour"]) == latest
    assert len(detailed["recent_anomalies"]) == selectors.RECENT_ANOMALIES


def test_anomalies_endpoint_lists_the_reference_anomalies(api_client, seeded):
    url = reverse("anomaly-list")
    body = api_client.get(url, {"election": seeded.election.id, "page_size": 1000}).json()
    got = {(a["constituency_id"], as_utc(a["hour"]), a["kind"]): a["weight"] for a in body["results"]}
    assert body["count"] == len(seeded.expected["anomalies"])
    assert got == seeded.expected["anomalies"]
    hours = [as_utc(a["hour"]) for a in body["results"]]
    assert hours == sorted(hours, reverse=True)

    spike = api_client.get(url, {"election": seeded.election.id, "kind": "velocity_spike"}).json()
    want = {key for key in seeded.expected["anomalies"] if key[2] == "velocity_spike"}
    assert {(a["constituency_id"], as_utc(a["hour"]), a["kind"]) for a in spike["results"]} == want

    member = seeded.constituencies[1]
    own = api_client.get(url, {"constituency": member.id}).json()
    assert own["count"] == seeded.expected["constituencies"][member.id]["total_anomalies"]


# --- caching --------------------------------------------------------------------------------------------


def test_cached_election_metrics_make_no_database_query(api_client, django_assert_num_queries):
    seeded = seeded_election(tz="Asia/Kolkata")
    url = reverse("election-metrics", kwargs={"election_id": seeded.election.id})
    first = api_client.get(url)
    with django_assert_num_queries(0):
        second = api_client.get(url)
    assert second.status_code == 200
    assert second.json() == first.json()


@pytest.mark.parametrize("name", ["constituency-metrics", "constituency-time-period"])
def test_cached_constituency_reads_make_no_database_query(api_client, django_assert_num_queries, name):
    seeded = seeded_election(tz="Asia/Kolkata")
    url = reverse(name, kwargs={"constituency_id": seeded.constituencies[0].id})
    params = {"period": "day"} if name == "constituency-time-period" else {}
    first = api_client.get(url, params)
    with django_assert_num_queries(0):
        second = api_client.get(url, params)
    assert second.json() == first.json()


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("election-metrics", {"election_id": "E"}),
        ("election-constituencies", {"election_id": "E"}),
        ("constituency-metrics", {"constituency_id": "C"}),
        ("constituency-time-period", {"constituency_id": "C"}),
        ("dashboard-summary", {}),
        ("dashboard-detailed", {}),
    ],
)
def test_cached_reads_send_an_etag_and_answer_304(api_client, name, kwargs):
    seeded = seeded_election(constituencies=5)
    ids = {"E": seeded.election.id, "C": seeded.constituencies[0].id}
    url = reverse(name, kwargs={k: ids[v] for k, v in kwargs.items()})
    params = {"period": "week"} if name == "constituency-time-period" else {}
    first = api_client.get(url, params)
    etag = first["ETag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    again = api_client.get(url, params, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again["ETag"] == etag
    assert again.content == b""
    stale = api_client.get(url, params, HTTP_IF_NONE_MATCH='"not-the-current-one"')
    assert stale.status_code == 200
    assert stale.json() == first.json()


def test_a_cached_read_answers_the_same_bytes_in_every_negotiated_form(api_client):
    """A hit sends the JSON rendered at the first read; an asked-for indent, the browsable
    API and a read after a recompute are rendered from the data as ever."""
    seeded = seeded_election(constituencies=5)
    url = reverse("election-metrics", kwargs={"election_id": seeded.election.id})
    first = api_client.get(url, HTTP_ACCEPT="application/json")
    again = api_client.get(url)  # no Accept header: JSON, from the stored bytes
    assert again.content == first.content
    assert again["Content-Type"] == first["Content-Type"] == "application/json"
    indented = api_client.get(url, HTTP_ACCEPT="application/json; indent=2")
    assert indented.content.startswith(b'{\n  "')
    assert indented.json() == first.json()
    html = api_client.get(url, HTTP_ACCEPT="text/html")
    assert html["Content-Type"].startswith("text/html")
    assert api_client.get(url).content == first.content
    metrics_cache.election_version_bump(seeded.election.id)
    fresh = api_client.get(url)
    assert fresh["ETag"] != first["ETag"]
    assert fresh.json()["computed_at"] != first.json()["computed_at"]


def test_a_page_etag_does_not_validate_another_page(api_client):
    seeded = seeded_election(constituencies=5)
    url = reverse("election-constituencies", kwargs={"election_id": seeded.election.id})
    first = api_client.get(url, {"page_size": 2})
    other = api_client.get(url, {"page_size": 2, "page": 2}, HTTP_IF_NONE_MATCH=first["ETag"])
    assert other.status_code == 200
    assert other["ETag"] != first["ETag"]


# --- query budget -----------------------------------------------------------------------------------------

READS = [
    ("hourly-stats-election", {"election_id": "E"}, {}),
    ("hourly-stats-constituency", {"constituency_id": "C"}, {}),
    ("constituency-metrics", {"constituency_id": "C"}, {}),
    ("constituency-time-period", {"constituency_id": "C"}, {"period": "day"}),
    ("election-metrics", {"election_id": "E"}, {}),
    ("election-constituencies", {"election_id": "E"}, {"ordering": "-anomaly_score"}),
    ("dashboard-summary", {}, {}),
    ("dashboard-detailed", {}, {}),
    ("anomaly-list", {}, {"election": "E"}),
    ("episode-list", {}, {"election": "E"}),
    ("episode-list", {}, {"constituency": "C", "open": "true"}),
]
QUERY_BUDGET = 6  # one of them the election's figures version, read at most once a second


def count_queries(client, seeded, name, kwargs, params) -> int:
    from django.core.cache import cache

    ids = {"E": seeded.election.id, "C": seeded.constituencies[0].id}
    url = reverse(name, kwargs={k: ids[v] for k, v in kwargs.items()})
    cache.clear()  # a miss: the expensive path, with the figures' versions read again
    metrics_cache.versions_forget()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, {k: ids.get(v, v) for k, v in params.items()})
    assert response.status_code == 200, response.content
    return len(queries)


def test_read_query_count_does_not_grow_with_the_election(api_client):
    small = seeded_election(tz="Europe/Moscow", constituencies=3, seed=7)
    large = seeded_election(tz="Europe/Moscow", constituencies=30, seed=8)
    counts = {
        name: tuple(count_queries(api_client, seeded, name, kwargs, params) for seeded in (small, large))
        for name, kwargs, params in READS
    }
    assert all(few == many <= QUERY_BUDGET for few, many in counts.values()), str(counts)


# --- permissions, throttling, browsable API, schema -------------------------------------------------


def test_anonymous_reads_follow_the_setting(api_client, reader_client, settings):
    seeded = seeded_election(constituencies=5)
    url = reverse("election-metrics", kwargs={"election_id": seeded.election.id})
    settings.METRICS_ALLOW_ANONYMOUS_READ = False
    response = api_client.get(url)
    assert response.status_code in (401, 403)
    assert "credentials" in response.json()["detail"]
    assert reader_client.get(url).status_code == 200
    settings.METRICS_ALLOW_ANONYMOUS_READ = True
    assert api_client.get(url).status_code == 200


class Clock:
    """The throttle's clock, set by the test (the counters live in the real cache)."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def throttle_clock(monkeypatch):
    clock = Clock(1_700_000_000.0)  # 20 s into a minute
    monkeypatch.setattr(FailOpenAnonRateThrottle, "timer", clock)
    monkeypatch.setattr(FailOpenAnonRateThrottle, "THROTTLE_RATES", {"anon": "3/minute"})
    return clock


def test_anonymous_reads_are_throttled(api_client, reader_client, throttle_clock):
    url = reverse("dashboard-summary")
    assert [api_client.get(url).status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = api_client.get(url)
    assert "throttled" in refused.json()["detail"]
    assert refused["Retry-After"] == "40"  # the rest of the minute
    assert reader_client.get(url).status_code == 200  # authenticated readers are not
    throttle_clock.now += 40
    assert api_client.get(url).status_code == 200  # a new window


def test_concurrent_anonymous_requests_are_each_counted(throttle_clock):
    """The count is one atomic increment per request: workers racing on the same client lose
    no request (a read-then-write history would)."""
    throttle_clock.now += 0.5
    request = APIRequestFactory().get("/api/metrics/dashboard/summary/", REMOTE_ADDR="203.0.113.9")
    request.user = None
    allowed = []

    def hit():
        for _ in range(5):
            allowed.append(FailOpenAnonRateThrottle().allow_request(Request(request), None))

    threads = [threading.Thread(target=hit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 3
    assert len(allowed) == 30


def test_the_throttle_lets_requests_through_when_the_cache_is_down(api_client, settings, throttle_clock, caplog):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:6390/0",  # nothing listens: connections are refused
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
    url = reverse("dashboard-summary")
    assert [api_client.get(url).status_code for _ in range(5)] == [200] * 5
    assert any("not throttling" in record.getMessage() for record in caplog.records)


def test_every_read_route_renders_in_the_browsable_api(api_client):
    seeded = seeded_election(constituencies=5)
    ids = {"E": seeded.election.id, "C": seeded.constituencies[0].id}
    for name, kwargs, params in READS:
        url = reverse(name, kwargs={k: ids[v] for k, v in kwargs.items()})
        response = api_client.get(url, {k: ids.get(v, v) for k, v in params.items()}, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, name
        assert response["Content-Type"].startswith("text/html"), name


def test_api_root_maps_every_route(api_client):
    body = get_ok(api_client, "api-root")
    for name in ("anomaly-list", "episode-list", "dashboard-summary", "dashboard-detailed", "schema", "docs"):
        assert body[name].startswith("http://testserver/api/"), name
    assert body["election-metrics"] == "http://testserver/api/metrics/election/{election_id}/"
    assert body["constituency-time-period"] == (
        "http://testserver/api/metrics/constituency/{constituency_id}/time-period/"
    )


def test_schema_documents_every_read_endpoint_with_its_response(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    for path in (
        "/api/hourly-stats/constituency/{constituency_id}/",
        "/api/hourly-stats/election/{election_id}/",
        "/api/metrics/constituency/{constituency_id}/",
        "/api/metrics/constituency/{constituency_id}/time-period/",
        "/api/metrics/election/{election_id}/",
        "/api/metrics/election/{election_id}/constituencies/",
        "/api/metrics/dashboard/summary/",
        "/api/metrics/dashboard/detailed/",
        "/api/anomalies/",
        "/api/anomalies/episodes/",
    ):
        assert "200" in paths[path]["get"]["responses"], path
    episode = schema["components"]["schemas"]["Episode"]
    assert set(episode["properties"]) == {
        "id", "election_id", "constituency_id", "kind", "first_hour", "last_hour", "hours", "peak", "open", "weight",
    }  # fmt: skip
    parameters = {p["name"] for p in paths["/api/anomalies/episodes/"]["get"]["parameters"]}
    assert {"election", "constituency", "kind", "open", "page", "page_size"} <= parameters
    election = schema["components"]["schemas"]["ElectionMetrics"]
    assert set(election["properties"]) == {
        "election_id", "code", "name", "status", "registered_voters", "total_bulletins_issued",
        "total_votes_cast", "total_transactions", "total_anomalies", "participation_rate",
        "constituency_count", "constituencies_with_anomalies", "hourly_turnout", "certified_at",
        "snapshot_sha256", "computed_at",
    }  # fmt: skip
    assert api_client.get("/api/docs/").status_code == 200


def test_an_election_without_constituencies_has_zero_participation(api_client):
    election = ElectionFactory()
    body = get_ok(api_client, "election-metrics", election_id=election.id)
    assert (body["participation_rate"], body["constituency_count"], body["hourly_turnout"]) == (0.0, 0, [])


def test_a_constituency_without_data_has_24_empty_hours(api_client):
    member = ConstituencyFactory()
    body = get_ok(api_client, "constituency-metrics", constituency_id=member.id)
    assert [slot["hour_of_day"] for slot in body["hourly_activity"]] == list(range(24))
    assert all(slot["transaction_count"] == 0 for slot in body["hourly_activity"])
    period = get_ok(api_client, "constituency-time-period", {"period": "month"}, constituency_id=member.id)
    assert period["buckets"] == []


def test_an_etag_stops_validating_once_a_recompute_commits(api_client):
    seeded = seeded_election(constituencies=5)
    url = reverse("election-metrics", kwargs={"election_id": seeded.election.id})
    etag = api_client.get(url)["ETag"]
    assert api_client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    member = seeded.constituencies[0]
    ingest_and_recompute(
        seeded.election.id, [("etag-vote", member.id, "vote_cast", seeded.election.starts_at + timedelta(minutes=5))]
    )
    fresh = api_client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert fresh.status_code == 200
    assert fresh["ETag"] != etag
    assert fresh.json()["total_votes_cast"] == seeded.expected["election"]["total_votes_cast"] + 1
