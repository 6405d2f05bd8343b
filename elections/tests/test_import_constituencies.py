from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from elections.models import Constituency
from elections.tests.factories import ConstituencyFactory, ElectionFactory, TransactionFactory
from metrics.models import DirtyBucket

pytestmark = pytest.mark.django_db


def _import(path, *args, election="test-election"):
    out, err = StringIO(), StringIO()
    call_command("import_constituencies", str(path), "--election", election, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _stored(election):
    return set(Constituency.objects.filter(election=election).values_list("code", "name", "registered_voters"))


def test_valid_lines_create_constituencies(tmp_path, election):
    path = tmp_path / "c.csv"
    path.write_text("code,name,registered_voters\nA1,Arbat,25000\n B2 , Basmanny ,150000\n")
    out, err = _import(path)

    assert _stored(election) == {("A1", "Arbat", 25000), ("B2", "Basmanny", 150000)}
    assert "read 2, created 2, updated 0, unchanged 0, rejected 0" in out
    assert err == ""


def test_bad_lines_are_reported_with_their_numbers_and_the_rest_stored(tmp_path, election):
    path = tmp_path / "c.csv"
    path.write_text(
        "code,name,registered_voters\n"  # 1
        "ok1,Good,100\n"  # 2
        ",No code,100\n"  # 3
        "c3,,100\n"  # 4
        "c4,Zero,0\n"  # 5
        "c5,Negative,-3\n"  # 6
        "c6,Words,many\n"  # 7
        "c7,Too many,1,2\n"  # 8
        "ok1,Again,200\n"  # 9
        f"{'x' * 65},Long code,10\n"  # 10
        "c8,Huge,3000000000\n"  # 11
        "ok2,Also good,7\n"  # 12
    )
    out, err = _import(path)

    assert _stored(election) == {("ok1", "Good", 100), ("ok2", "Also good", 7)}
    assert err.strip().splitlines() == [
        "line 3: code: This field is required.",
        "line 4: name: This field is required.",
        "line 5: registered_voters: must be between 1 and 2147483647, got 0.",
        "line 6: registered_voters: must be between 1 and 2147483647, got -3.",
        "line 7: registered_voters: 'many' is not a whole number.",
        "line 8: expected 3 fields as in the header, got 4",
        "line 9: code: 'ok1' already appears on line 2.",
        "line 10: code: At most 64 characters.",
        "line 11: registered_voters: must be between 1 and 2147483647, got 3000000000.",
    ]
    assert "read 11, created 2, updated 0, unchanged 0, rejected 9" in out


def test_reimport_updates_names_and_voters_and_announces_only_changed_constituencies(
    tmp_path, election, django_capture_on_commit_callbacks
):
    renamed = ConstituencyFactory(election=election, code="r1", name="Old name", registered_voters=100)
    revoted = ConstituencyFactory(election=election, code="r2", name="Same", registered_voters=100)
    same = ConstituencyFactory(election=election, code="r3", name="Same", registered_voters=100)
    other_election = ConstituencyFactory(election=ElectionFactory(), code="r2", registered_voters=100)
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(10):
            TransactionFactory(constituency=revoted, timestamp=election.starts_at + timedelta(minutes=i))
    revoted.refresh_from_db()
    assert revoted.participation_rate == pytest.approx(10.0)

    path = tmp_path / "c.csv"
    path.write_text("code,name,registered_voters\nr1,New name,100\nr2,Same,40\nr3,Same,100\nr4,Fresh,5\n")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        out, _ = _import(path)

    assert "read 4, created 1, updated 2, unchanged 1, rejected 0" in out
    assert _stored(election) == {("r1", "New name", 100), ("r2", "Same", 40), ("r3", "Same", 100), ("r4", "Fresh", 5)}
    # Changed and new constituencies are announced (their figures and names show in reads);
    # the unchanged one is not.
    fresh = Constituency.objects.get(election=election, code="r4")
    assert set(DirtyBucket.objects.values_list("constituency_id", "hour")) == {
        (revoted.id, None),
        (renamed.id, None),
        (fresh.id, None),
    }
    for callback in callbacks:
        callback()
    revoted.refresh_from_db()
    assert revoted.participation_rate == pytest.approx(25.0)
    other_election.refresh_from_db()
    assert other_election.registered_voters == 100
    assert renamed.id == Constituency.objects.get(election=election, code="r1").id
    assert same.id == Constituency.objects.get(election=election, code="r3").id


def test_unknown_election_and_bad_header_store_nothing(tmp_path, election):
    good = tmp_path / "c.csv"
    good.write_text("code,name,registered_voters\nA1,Arbat,10\n")
    with pytest.raises(CommandError, match="No election with code 'nope'"):
        _import(good, election="nope")
    bad = tmp_path / "bad.csv"
    bad.write_text("code,title,voters\nA1,Arbat,10\n")
    with pytest.raises(CommandError, match="lacks required column.*name, registered_voters"):
        _import(bad)
    with pytest.raises(CommandError, match="No such file"):
        _import(tmp_path / "missing.csv")
    assert not Constituency.objects.exists()


def test_strict_exits_non_zero_when_a_line_is_rejected(tmp_path, election):
    path = tmp_path / "c.csv"
    path.write_text("code,name,registered_voters\nA1,Arbat,10\nA2,Zero,0\n")
    with pytest.raises(CommandError, match="1 line"):
        _import(path, "--strict")
    assert _stored(election) == {("A1", "Arbat", 10)}


def test_imported_constituencies_show_in_cached_election_metrics_at_once(
    tmp_path, election, api_client, django_capture_on_commit_callbacks
):
    url = f"/api/metrics/election/{election.id}/"
    assert api_client.get(url).json()["constituency_count"] == 0  # now cached
    path = tmp_path / "c.csv"
    path.write_text("code,name,registered_voters\nA1,Arbat,25000\nB2,Basmanny,150000\n")
    with django_capture_on_commit_callbacks(execute=True):
        _import(path)

    body = api_client.get(url).json()
    assert body["constituency_count"] == 2
    assert body["registered_voters"] == 175000
