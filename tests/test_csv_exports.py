"""CSV exports of every list and metrics endpoint (election_monitor.csv_export): the same values
as the JSON, a local-time twin after every time column, every row of a list streamed, the
same permissions and the same 400s, and ``?format=csv`` in the OpenAPI schema."""

import csv
import io
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from election_monitor.csv_export import table_rows
from metrics.tests.test_selectors import seeded_election

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def zone_name():
    return "Asia/Kolkata"


@pytest.fixture
def seeded(zone_name):
    return seeded_election(tz=zone_name, constituencies=5)


def read_csv(response) -> list[dict]:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"))))


def cell(value) -> str:
    """How the JSON's value reads in CSV."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def assert_rows_match(csv_rows: list[dict], json_rows: list[dict], zone: ZoneInfo | None) -> None:
    """Every JSON value is in its CSV cell; every time column has its local twin, in ``zone``."""
    assert len(csv_rows) == len(json_rows)
    for got, want in zip(csv_rows, json_rows, strict=True):
        for name, value in want.items():
            assert got[name] == cell(value), name
            if isinstance(value, str) and value.endswith("Z") and "T" in value:
                if zone is None:  # figures over all elections: no election's local time
                    assert got[f"{name}_local"] == "", name
                    continue
                local = datetime.fromisoformat(got[f"{name}_local"])
                assert local == datetime.fromisoformat(value.replace("Z", "+00:00")), name
                assert local.utcoffset() == local.astimezone(zone).utcoffset(), name


def all_json_rows(client, url: str, params: dict) -> list[dict]:
    """Every item of a paginated list, following ``next``."""
    rows, page = [], 1
    while True:
        body = client.get(url, {**params, "page": page, "page_size": 1000}).json()
        rows.extend(body["results"])
        if not body["next"]:
            return rows
        page += 1


def endpoints(seeded) -> list[tuple[str, dict, bool]]:
    """(URL, query, is a paginated list) of every list and metrics read endpoint."""
    election, constituency = seeded.election, seeded.constituencies[0]
    return [
        (reverse("hourly-stats-election", kwargs={"election_id": election.id}), {}, True),
        (reverse("hourly-stats-constituency", kwargs={"constituency_id": constituency.id}), {}, True),
        (
            reverse("election-constituencies", kwargs={"election_id": election.id}),
            {"ordering": "-total_votes_cast"},
            True,
        ),
        (reverse("anomaly-list"), {"election": election.id}, True),
        (reverse("election-list"), {}, True),
        (reverse("constituency-list"), {"election": election.id}, True),
        (reverse("constituency-metrics", kwargs={"constituency_id": constituency.id}), {}, False),
        (
            reverse("constituency-time-period", kwargs={"constituency_id": constituency.id}),
            {"period": "day"},
            False,
        ),
        (reverse("election-metrics", kwargs={"election_id": election.id}), {}, False),
        (reverse("dashboard-summary"), {}, False),
        (reverse("dashboard-detailed"), {}, False),
    ]


def test_every_list_and_metrics_endpoint_exports_the_values_of_its_json(api_client, seeded, zone_name):
    zone = ZoneInfo(zone_name)
    for url, params, paginated in endpoints(seeded):
        exported = read_csv(api_client.get(url, {**params, "format": "csv"}))
        if paginated:
            want = all_json_rows(api_client, url, params)
        else:
            want = table_rows(api_client.get(url, params).json())
        assert want, url
        assert_rows_match(exported, want, zone if "summary" not in url else None)


def test_accept_text_csv_is_the_same_export_as_format_csv(api_client, seeded):
    for url, params, _ in endpoints(seeded):
        by_header = api_client.get(url, params, HTTP_ACCEPT="text/csv")
        by_format = api_client.get(url, {**params, "format": "csv"})
        assert by_header.status_code == by_format.status_code == 200, url
        assert by_header["Content-Type"].startswith("text/csv")
        assert 'attachment; filename="' in by_header["Content-Disposition"]
        drop = {"computed_at", "computed_at_local", "summary.computed_at", "summary.computed_at_local"}
        strip = [
            [{k: v for k, v in row.items() if k not in drop} for row in read_csv(r)] for r in (by_header, by_format)
        ]
        assert strip[0] == strip[1], url


def test_a_metrics_object_becomes_one_row_per_entry_of_its_list():
    body = {
        "election_id": 1,
        "computed_at": "2024-01-01T00:00:00Z",
        "hourly_turnout": [{"hour": "2024-01-01T00:00:00Z", "votes_cast": 3}, {"hour": "x", "votes_cast": 4}],
    }
    rows = table_rows(body)
    assert rows == [
        {
            "election_id": 1,
            "computed_at": "2024-01-01T00:00:00Z",
            "hourly_turnout.hour": h,
            "hourly_turnout.votes_cast": v,
        }
        for h, v in (("2024-01-01T00:00:00Z", 3), ("x", 4))
    ]
    several = table_rows({"summary": {"a": 1}, "xs": [{"v": 1}], "ys": [{"w": 2}, {"w": 3}]})
    assert [row["section"] for row in several] == ["xs", "ys", "ys"]
    assert all(row["summary.a"] == 1 for row in several)


def test_the_local_time_of_each_row_is_its_own_elections(api_client, seeded):
    other = seeded_election(tz="Europe/Berlin", constituencies=5, seed=2)
    rows = read_csv(api_client.get(reverse("election-list"), {"format": "csv"}))
    by_code = {row["code"]: row for row in rows}
    for election in (seeded.election, other.election):
        local = datetime.fromisoformat(by_code[election.code]["starts_at_local"])
        assert local.utcoffset() == election.starts_at.astimezone(ZoneInfo(election.timezone)).utcoffset()


def test_hourly_stats_of_an_election_stream_from_an_iterator_whatever_the_page_size(api_client, seeded):
    url = reverse("hourly-stats-election", kwargs={"election_id": seeded.election.id})
    response = api_client.get(url, {"format": "csv", "page_size": 1})
    assert response.streaming
    rows = read_csv(response)
    assert len(rows) == len(seeded.expected["hourly"])
    with CaptureQueriesContext(connection) as queries:
        read_csv(api_client.get(url, {"format": "csv"}))
    # A fixed number of queries (lookup, zones, the rows' iterator), not one per row or chunk.
    assert len(queries) <= 5


@pytest.mark.parametrize(
    ("url_name", "kwargs", "params"),
    [
        ("hourly-stats-election", {"election_id": "abc"}, {}),
        ("hourly-stats-election", {"election_id": "1"}, {"start_time": "2024-01-01T00:00:00"}),
        ("constituency-time-period", {"constituency_id": "1"}, {"period": "fortnight"}),
        ("election-constituencies", {"election_id": "1"}, {"ordering": "bogus"}),
        ("anomaly-list", {}, {"kind": "nope"}),
    ],
)
def test_bad_parameters_of_an_export_are_a_400(api_client, seeded, url_name, kwargs, params):
    response = api_client.get(reverse(url_name, kwargs=kwargs), {**params, "format": "csv"})
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"  # errors read as everywhere in the API
    assert response.json()


def test_an_export_of_a_missing_object_is_a_404(api_client, db):
    for name, kwargs in (
        ("election-metrics", {"election_id": 999}),
        ("hourly-stats-constituency", {"constituency_id": 999}),
    ):
        assert api_client.get(reverse(name, kwargs=kwargs), {"format": "csv"}).status_code == 404


def test_exports_need_the_read_permission(api_client, reader_client, seeded, settings):
    settings.METRICS_ALLOW_ANONYMOUS_READ = False
    url = reverse("hourly-stats-election", kwargs={"election_id": seeded.election.id})
    assert api_client.get(url, {"format": "csv"}).status_code in (401, 403)
    assert reader_client.get(url, {"format": "csv"}).status_code == 200


def test_a_cached_export_answers_if_none_match_with_304(api_client, seeded):
    url = reverse("election-metrics", kwargs={"election_id": seeded.election.id})
    first = api_client.get(url, {"format": "csv"})
    again = api_client.get(url, {"format": "csv"}, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    assert api_client.get(url, HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 200  # JSON is another ETag


def test_the_schema_documents_csv_and_the_format_parameter(api_client, db):
    schema = yaml.safe_load(api_client.get(reverse("schema")).content)
    for path in (
        "/api/hourly-stats/election/{election_id}/",
        "/api/metrics/election/{election_id}/",
        "/api/metrics/dashboard/detailed/",
        "/api/anomalies/",
        "/api/elections/",
        "/api/transactions/",
    ):
        operation = schema["paths"][path]["get"]
        assert "text/csv" in operation["responses"]["200"]["content"], path
        assert any(p["name"] == "format" and p["in"] == "query" for p in operation["parameters"]), path
