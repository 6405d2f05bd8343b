"""import_protocols and protocols.services.protocols_import on small generated files."""

import io
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from elections.models import Constituency
from elections.signals import buckets_changed
from elections.tests.factories import ConstituencyFactory, ElectionFactory
from protocols.importers import station_code
from protocols.models import ElectionOption, ProtocolImport, ProtocolResult
from protocols.services import protocols_import
from protocols.tests.files import Row, commission_csv, plain_csv, station

pytestmark = pytest.mark.django_db

OPTIONS = ["1. Партия А", "2. Партия Б", "Кандидат В"]


def run(path: Path, election, *args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_protocols", str(path), "--election", election.code, "--no-progress", *args, stdout=out, stderr=err
    )
    return out.getvalue(), err.getvalue()


def import_quietly(path: Path, election, **kwargs):
    rejected = []
    report = protocols_import(path=path, election=election, on_rejected=lambda *a: rejected.append(a), **kwargs)
    return report, rejected


@pytest.fixture
def election(db):
    return ElectionFactory(code="duma")


def test_import_stores_each_station_with_its_options_and_creates_constituencies(election, tmp_path):
    rows = [station("УИК №1", 1000, 600, (300, 200, 50)), station("УИК №2", 2000, 1500, (900, 400, 150), tik="Вторая")]
    out, err = run(commission_csv(tmp_path / "p.csv", rows, OPTIONS), election)

    assert "stored 2, skipped empty 0, rejected 0, constituencies created 2" in out
    assert err == ""
    assert list(ElectionOption.objects.filter(election=election).values_list("position", "name")) == list(
        enumerate(OPTIONS)
    )
    by_uik = {p.constituency.name.rsplit(" / ", 1)[1]: p for p in ProtocolResult.objects.select_related("constituency")}
    first = by_uik["УИК №1"]
    assert (first.registered_voters, first.ballots_issued, first.ballots_cast, first.votes) == (
        1000,
        600,
        560,
        [300, 200, 50],
    )
    assert first.constituency.registered_voters == 1000
    assert first.constituency.code == station_code(region="Область", tik="Первая", uik="УИК №1")
    assert first.constituency.name == "Область / Первая / УИК №1"
    assert by_uik["УИК №2"].constituency.registered_voters == 2000
    assert ProtocolImport.objects.get().stored == 2


def test_every_year_wording_is_matched(election, tmp_path):
    for year in (2011, 2021):
        report, rejected = import_quietly(
            commission_csv(tmp_path / f"{year}.csv", [station("1")], OPTIONS, year=year), election
        )
        assert (report.stored, rejected) == (1, [])
        assert ProtocolResult.objects.get().ballots_issued == 600


def test_existing_constituencies_are_used_not_duplicated(election, tmp_path):
    code = station_code(region="Область", tik="Первая", uik="УИК №1")
    existing = ConstituencyFactory(election=election, code=code, registered_voters=990)
    report, _ = import_quietly(
        commission_csv(tmp_path / "p.csv", [station("УИК №1"), station("УИК №2")], OPTIONS), election
    )

    assert report.constituencies_created == 1
    assert ProtocolResult.objects.get(constituency=existing).registered_voters == 1000
    existing.refresh_from_db()
    assert existing.registered_voters == 990  # the stream's number stays; reconciliation shows the difference


def test_empty_rows_are_skipped_and_counted_and_bad_lines_rejected_by_number(election, tmp_path):
    empty = ["Область", "Первая", "УИК №9", *[""] * (7 + len(OPTIONS))]
    never_opened = ["Область", "Первая", "УИК №10", *["0"] * (7 + len(OPTIONS))]
    rows = [
        station("УИК №1"),  # line 2
        empty,  # 3
        ["Область", "Первая", "УИК №3", "1000", "1000", "x", "1", "1", "1", "3", "1", "1", "1"],  # 4
        ["Область", "Первая", "УИК №4", "1000"],  # 5
        station("УИК №1"),  # 6: the same station again
        station("УИК №5", votes=(300, 200, 50)).__class__(**{**station("УИК №5").__dict__, "valid": 10}),  # 7
        never_opened,  # 8
        ["Область", "Первая", "УИК №11", "0", "5", "0", "5", "0", "0", "5", "5", "0", "0"],  # 9
        ["Область", "Первая", "УИК №12", "1000", "1000", "", "1", "1", "1", "3", "1", "1", "1"],  # 10
        station("УИК №13", registered=500),  # 11
    ]
    out, err = run(commission_csv(tmp_path / "p.csv", rows, OPTIONS), election)

    assert "read 10, stored 2, skipped empty 2, rejected 6" in out
    lines = err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [f"line {n}" for n in (4, 5, 6, 7, 9, 10)]
    assert "'x' is not a whole number" in lines[0]
    assert "expected 13 fields" in lines[1]
    assert "already appears on line 2" in lines[2]
    assert "exceed the valid ballots" in lines[3]
    assert "registered_voters: 0" in lines[4]
    assert "ballots_early: empty" in lines[5]
    record = ProtocolImport.objects.get()
    assert (record.read, record.stored, record.skipped_empty, record.rejected) == (10, 2, 2, 6)


def test_strict_exits_non_zero_after_storing_the_valid_lines(election, tmp_path):
    path = commission_csv(tmp_path / "p.csv", [station("1"), ["Область", "Первая", "2", "1"]], OPTIONS)
    with pytest.raises(CommandError, match="1 line"):
        run(path, election, "--strict")
    assert ProtocolResult.objects.count() == 1


def test_malformed_quote_rejects_only_its_line(election, tmp_path):
    path = commission_csv(tmp_path / "p.csv", [station("1")], OPTIONS)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('Область,"Первая,2,1000\n')
    report, rejected = import_quietly(path, election)
    assert report.stored == 1
    assert rejected
    assert rejected[0][0] == 3


def test_reimport_replaces_protocols_and_options(election, tmp_path):
    import_quietly(commission_csv(tmp_path / "a.csv", [station("1"), station("2"), station("3")], OPTIONS), election)
    first_import = ProtocolImport.objects.get().id
    report, _ = import_quietly(commission_csv(tmp_path / "b.csv", [station("2", votes=(1, 2))], ["X", "Y"]), election)

    assert report.import_id > first_import
    assert ProtocolResult.objects.count() == 1
    assert ProtocolResult.objects.get().votes == [1, 2]
    assert list(ElectionOption.objects.values_list("name", flat=True)) == ["X", "Y"]
    assert Constituency.objects.filter(election=election).count() == 3  # observed places stay


def test_a_file_without_a_valid_station_changes_nothing(election, tmp_path):
    import_quietly(commission_csv(tmp_path / "a.csv", [station("1")], OPTIONS), election)
    path = commission_csv(tmp_path / "b.csv", [["Область", "Первая", "2", "1"]], OPTIONS)
    with pytest.raises(CommandError, match="holds no valid station"):
        run(path, election)
    assert ProtocolResult.objects.count() == 1
    assert ProtocolImport.objects.count() == 1
    assert list(ElectionOption.objects.values_list("name", flat=True)) == OPTIONS


def test_header_error_names_the_unmatched_columns_and_stores_nothing(election, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "region,tik,uik,Число избирателей внесенных в список,Число бюллетеней выданных досрочно,"
        "Число что-то ещё,Число действительных избирательных бюллетеней,Партия\nA,B,1,1,1,1,1,1\n",
        encoding="utf-8",
    )
    with pytest.raises(CommandError) as error:
        run(path, election)
    message = str(error.value)
    assert "ballots issued in the premises" in message
    assert "invalid ballots" in message
    assert "Число что-то ещё" in message  # the protocol line it could not match
    assert "Nothing was stored" in message
    assert not ProtocolImport.objects.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "The file is empty"),
        ("code,registered_voters\nx,1\n", "lacks column(s) ballots_early"),
        ('"unterminated\n', "not valid CSV"),
    ],
)
def test_unreadable_files_are_refused(election, tmp_path, content, message):
    path = tmp_path / "f.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CommandError, match=re.escape(message)):
        run(path, election)


def test_unknown_election_and_missing_file_are_clear_errors(election, tmp_path):
    with pytest.raises(CommandError, match="No election with code 'nope'"):
        call_command("import_protocols", str(tmp_path / "x.csv"), "--election", "nope")
    with pytest.raises(CommandError, match="No such file"):
        run(tmp_path / "missing.csv", election)


def test_remote_e_voting_rows_without_a_station_number_stay_apart(election, tmp_path):
    rows = [
        Row(
            "Курская область",
            "Дистанционное электронное голосование",
            "",
            300,
            0,
            200,
            0,
            190,
            0,
            [100, 50, 40],
            oik="ОИК №109",
        ),
        Row(
            "Курская область",
            "Дистанционное электронное голосование",
            "",
            400,
            0,
            300,
            0,
            290,
            0,
            [100, 150, 40],
            oik="ОИК №110",
        ),
        Row("Курская область", "Дистанционное электронное голосование", "", 400, 0, 300, 0, 290, 0, [100, 150, 40]),
    ]
    report, rejected = import_quietly(commission_csv(tmp_path / "p.csv", rows, OPTIONS, oik=True), election)
    assert report.stored == 2
    assert "no oik" in rejected[0][1]
    names = sorted(Constituency.objects.values_list("name", flat=True))
    assert names[0].endswith("ОИК №109 (remote e-voting)")
    assert sorted(Constituency.objects.values_list("code", flat=True))[0].startswith("oik109-")


def test_plain_layout_and_gzip(election, tmp_path):
    rows = [station("A-1"), station("A-2", votes=(1, 2, 3))]
    report, rejected = import_quietly(plain_csv(tmp_path / "p.csv", rows, OPTIONS), election)
    assert (report.file_format, report.stored, rejected) == ("plain", 2, [])
    assert set(Constituency.objects.values_list("code", flat=True)) == {"A-1", "A-2"}

    report, _ = import_quietly(commission_csv(tmp_path / "p.csv.gz", [station("1")], OPTIONS), election)
    assert (report.file_format, report.stored) == ("commission", 1)


def test_new_constituencies_are_announced_in_the_import_transaction(election, tmp_path):
    received = []

    def receiver(sender, election_id, buckets, **kwargs):
        received.append((election_id, frozenset(buckets), connection.in_atomic_block))

    buckets_changed.connect(receiver)
    try:
        import_quietly(commission_csv(tmp_path / "p.csv", [station(str(i)) for i in range(5)], OPTIONS), election)
        import_quietly(commission_csv(tmp_path / "p.csv", [station(str(i)) for i in range(5)], OPTIONS), election)
    finally:
        buckets_changed.disconnect(receiver)
    created = {(pk, None) for pk in Constituency.objects.filter(election=election).values_list("id", flat=True)}
    whole = (election.id, frozenset({(None, None)}), True)  # reconciliation: every mismatch may change
    assert received == [(election.id, frozenset(created), True), whole, whole]  # the re-import created none


def test_queries_do_not_grow_with_the_number_of_stations(election, tmp_path):
    def queries(count: int) -> int:
        path = commission_csv(
            tmp_path / f"{count}.csv", [station(str(i), tik=f"t{count}") for i in range(count)], OPTIONS
        )
        with CaptureQueriesContext(connection) as context:
            import_quietly(path, election, batch_size=10_000)
        return len(context.captured_queries)

    # Bulk statements only: SQLite splits them at its parameter limit, never one per station.
    assert queries(600) - queries(30) < 570 / 20


def test_a_certified_election_gets_no_new_constituencies_and_nothing_changes(election, tmp_path):
    from elections.services import election_certify

    import_quietly(commission_csv(tmp_path / "a.csv", [station("1")], OPTIONS), election)
    election_certify(election_id=election.id, user=None)
    with pytest.raises(CommandError, match="is certified"):
        run(commission_csv(tmp_path / "b.csv", [station("1"), station("2")], OPTIONS), election)
    assert ProtocolResult.objects.count() == 1
    assert ProtocolImport.objects.count() == 1
