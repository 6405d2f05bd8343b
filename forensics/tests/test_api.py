"""The forensics endpoints over real HTTP (DRF's APIClient), on an election with known protocols."""

import io
from pathlib import Path
from unittest import mock

import pytest
from django.core.management import call_command

from elections.tests.factories import ElectionFactory
from forensics import figures
from forensics.tests import reference
from forensics.tests.conftest import OPTIONS, generated_rows, import_rows

pytestmark = pytest.mark.django_db
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def url(election, figure: str) -> str:
    return f"/api/forensics/election/{election.id}/{figure}/"


def dicts(rows) -> list[dict]:
    return [
        {"registered": r.registered, "early": r.early, "on_day": r.on_day, "outside": r.outside}
        | {"valid": r.valid, "invalid": r.invalid, "votes": r.votes}
        for r in rows
    ]


def test_summary_equals_the_reference(api_client, protocol_election, protocol_rows):
    body = api_client.get(url(protocol_election, "summary")).json()
    expected = reference.summary(dicts(protocol_rows), OPTIONS)
    assert set(body) == {"election_id", *expected, "excluded", "computed_at"}
    assert {k: body[k] for k in expected} == pytest.approx(expected)
    assert body["election_id"] == protocol_election.id
    assert body["excluded"] == {"empty results in the file": 0, "rejected lines of the file": 0}


def test_histogram_lists_every_bin_with_its_inputs(api_client, protocol_election, protocol_rows):
    response = api_client.get(url(protocol_election, "histogram"), {"of": "leader_result", "bin": "0.5"})
    body = response.json()
    assert set(body) == {"of", "bin", "bins", "stations", "excluded", "computed_at"}
    assert (body["of"], body["bin"], len(body["bins"])) == ("leader_result", 0.5, 201)
    counts, voters = reference.histogram(dicts(protocol_rows), "leader_result", reference.Fraction(1, 2))
    assert [b["stations"] for b in body["bins"]] == counts
    assert [b["voters"] for b in body["bins"]] == voters
    assert body["stations"] + sum(body["excluded"].values()) == len(protocol_rows)


def test_default_histogram_bin_is_a_tenth(api_client, protocol_election):
    body = api_client.get(url(protocol_election, "histogram"), {"of": "turnout"}).json()
    assert body["bin"] == 0.1
    assert [b["center"] for b in body["bins"][:3]] == [0.0, 0.1, 0.2]
    assert len(body["bins"]) == 1001


def test_fingerprint_cells_are_the_non_empty_ones(api_client, protocol_election, protocol_rows):
    body = api_client.get(url(protocol_election, "fingerprint")).json()
    assert body["bin"] == 1.0
    cells = reference.fingerprint(dicts(protocol_rows), reference.Fraction(1))
    assert {(c["turnout"], c["leader_result"]): c["voters"] for c in body["cells"]} == {
        (float(t), float(r)): v for (t, r), v in cells.items()
    }
    assert all(c["voters"] > 0 for c in body["cells"])


def test_integer_excess_reports_its_inputs(api_client, protocol_election, protocol_rows):
    body = api_client.get(url(protocol_election, "integer-excess"), {"reps": 200, "seed": 7}).json()
    assert (body["reps"], body["seed"]) == (200, 7)
    assert body["stations"] == len(reference.integer_stations(dicts(protocol_rows)))
    observed = reference.integer_observed(dicts(protocol_rows))
    for kind in ("turnout", "leader_result", "either"):
        assert body[kind]["observed"] == observed[kind]
        assert body[kind]["excess"] == pytest.approx(body[kind]["observed"] - body[kind]["expected"])
        assert [p["percent"] for p in body[kind]["per_integer"]] == list(range(101))
    default = api_client.get(url(protocol_election, "integer-excess")).json()
    assert (default["reps"], default["seed"]) == (1000, 42)


@pytest.mark.parametrize(
    ("figure", "params"),
    [("histogram", {"of": "turnout"}), ("fingerprint", {}), ("integer-excess", {"reps": 20})],
)
def test_pictures_are_png(api_client, protocol_election, figure, params):
    response = api_client.get(url(protocol_election, figure), {**params, "format": "png"})
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response.content.startswith(PNG_SIGNATURE)
    assert len(response.content) < 150_000


@pytest.mark.parametrize(
    ("figure", "params", "field"),
    [
        ("histogram", {}, "of"),
        ("histogram", {"of": "votes"}, "of"),
        ("histogram", {"of": "turnout", "bin": "0.3"}, "bin"),
        ("histogram", {"of": "turnout", "bin": "abc"}, "bin"),
        ("histogram", {"of": "turnout", "bin": "0"}, "bin"),
        ("histogram", {"of": "turnout", "bin": "nan"}, "bin"),
        ("fingerprint", {"bin": "1000"}, "bin"),
        ("integer-excess", {"reps": "0"}, "reps"),
        ("integer-excess", {"reps": "ten"}, "reps"),
        ("integer-excess", {"reps": "1000000"}, "reps"),
        ("integer-excess", {"seed": "-1"}, "seed"),
        ("integer-excess", {"seed": str(2**40)}, "seed"),
        ("summary", {"format": "png"}, "format"),
        ("reconciliation", {"format": "xml"}, "format"),
        ("reconciliation", {"page_size": "0"}, "page_size"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(api_client, protocol_election, figure, params, field):
    response = api_client.get(url(protocol_election, figure), params)
    assert response.status_code == 400, response.content
    assert field in response.json()


@pytest.mark.parametrize("figure", ["summary", "histogram", "fingerprint", "integer-excess", "reconciliation"])
def test_missing_elections_and_bad_ids(api_client, db, figure):
    params = {"of": "turnout"}
    assert api_client.get(f"/api/forensics/election/abc/{figure}/", params).status_code == 400
    assert api_client.get(f"/api/forensics/election/0/{figure}/", params).status_code == 400
    assert api_client.get(f"/api/forensics/election/99999999/{figure}/", params).status_code == 404


@pytest.mark.parametrize("figure", ["summary", "histogram", "fingerprint", "integer-excess"])
def test_an_election_without_protocols_is_a_404(api_client, db, figure):
    election = ElectionFactory()
    response = api_client.get(url(election, figure), {"of": "turnout", "format": "json"})
    assert response.status_code == 404
    assert "No protocols" in response.json()["detail"]


def test_a_png_request_that_fails_answers_json(api_client, db):
    election = ElectionFactory()
    response = api_client.get(url(election, "fingerprint"), {"format": "png"})
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "No protocols" in response.json()["detail"]


def test_reads_follow_the_read_permission(api_client, reader_client, protocol_election, settings):
    settings.METRICS_ALLOW_ANONYMOUS_READ = False
    assert api_client.get(url(protocol_election, "summary")).status_code in (401, 403)
    assert reader_client.get(url(protocol_election, "summary")).status_code == 200


def test_figures_are_cached_until_a_reimport_from_any_process(api_client, protocol_election, tmp_path):
    first = api_client.get(url(protocol_election, "summary")).json()
    again = api_client.get(url(protocol_election, "summary")).json()
    assert again["computed_at"] == first["computed_at"]  # served from the cache

    # A re-import touches only the database (as another process would); nothing is deleted
    # from the cache, and the next read sees the new protocols at once.
    import_rows(protocol_election, generated_rows(10, seed=99), tmp_path, name="second.csv")
    after = api_client.get(url(protocol_election, "summary")).json()
    assert after["stations"] == 10
    assert after["computed_at"] != first["computed_at"]


def test_a_failing_cache_answers_from_the_database(api_client, protocol_election, protocol_rows):
    with (
        mock.patch("django.core.cache.cache.get", side_effect=ConnectionError("cache down")),
        mock.patch("django.core.cache.cache.set", side_effect=ConnectionError("cache down")),
        mock.patch("django.core.cache.cache.add", side_effect=ConnectionError("cache down")),
    ):
        response = api_client.get(url(protocol_election, "summary"))
    assert response.status_code == 200
    assert response.json()["stations"] == len(protocol_rows)


def test_the_schema_documents_every_forensics_path_and_validates(tmp_path):
    target = Path(tmp_path) / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target), stdout=io.StringIO())
    schema = target.read_text()
    for figure in ("summary", "histogram", "fingerprint", "integer-excess", "reconciliation"):
        assert f"/api/forensics/election/{{election_id}}/{figure}/" in schema
    assert "image/png" in schema


def test_same_figure_as_the_function_on_the_loaded_stations(api_client, protocol_election):
    from forensics.selectors import stations_load

    body = api_client.get(url(protocol_election, "integer-excess"), {"reps": 30, "seed": 5}).json()
    direct = figures.integer_excess(stations_load(election_id=protocol_election.id), reps=30, seed=5).as_dict()
    assert {k: body[k] for k in direct} == direct


def test_only_the_default_monte_carlo_is_cached(api_client, protocol_election):
    """Repetitions and seed are free parameters: caching every pair would grow the cache without
    bound, so only the default (1,000 and 42) is kept."""
    figure = url(protocol_election, "integer-excess")
    custom = [api_client.get(figure, {"reps": 20, "seed": 3}).json()["computed_at"] for _ in range(2)]
    default = [api_client.get(figure).json()["computed_at"] for _ in range(2)]
    assert custom[0] != custom[1]
    assert default[0] == default[1]
