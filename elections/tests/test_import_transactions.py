import gzip
import json
import random
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone as dj_timezone

from elections.models import Transaction
from elections.tests.factories import ConstituencyFactory, ElectionFactory, TransactionFactory
from metrics.models import Anomaly, DirtyBucket, HourlyStats
from metrics.tests import reference

pytestmark = pytest.mark.django_db

HEADER = "tx_hash,constituency,kind,timestamp,block_number"


def _write(path, text: str):
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _import(path, *args, election="test-election"):
    out, err = StringIO(), StringIO()
    call_command("import_transactions", str(path), "--election", election, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _stored():
    return {(t.tx_hash, t.constituency_id, t.kind, t.timestamp, t.block_number) for t in Transaction.objects.all()}


def _ts(election, minutes: int) -> datetime:
    return election.starts_at + timedelta(minutes=minutes)


def test_csv_import_stores_every_line_with_its_hour(tmp_path, election, constituencies):
    a, b = constituencies[:2]
    lines = [
        HEADER,
        f"h1,{a.code},bulletin_issued,2024-09-06T05:10:00Z,100",
        f"h2,{a.code},vote_cast,2024-09-06T08:15:30+03:00,",
        f"h3,{b.code},other,2024-09-06T07:59:59.5+00:00,7",
    ]
    out, err = _import(_write(tmp_path / "tx.csv", "\n".join(lines) + "\n"))

    utc = UTC
    assert _stored() == {
        ("h1", a.id, "bulletin_issued", datetime(2024, 9, 6, 5, 10, tzinfo=utc), 100),
        ("h2", a.id, "vote_cast", datetime(2024, 9, 6, 5, 15, 30, tzinfo=utc), None),
        ("h3", b.id, "other", datetime(2024, 9, 6, 7, 59, 59, 500000, tzinfo=utc), 7),
    }
    # Moscow is UTC+3 all year: the local hour 08:00 starts at 05:00 UTC.
    assert Transaction.objects.get(tx_hash="h2").hour == datetime(2024, 9, 6, 5, 0, tzinfo=utc)
    assert all(t.election_id == election.id for t in Transaction.objects.all())
    assert "read 3, created 3, duplicates 0, conflicts 0, rejected 0" in out
    assert err == ""


@pytest.mark.parametrize("name", ["tx.jsonl", "tx.ndjson.gz", "tx.data"])
def test_json_lines_import_stores_every_line(tmp_path, election, constituencies, name):
    a = constituencies[0]
    items = [
        {"tx_hash": "j1", "constituency": a.code, "kind": "bulletin_issued", "timestamp": "2024-09-06T05:00:00Z"},
        {
            "tx_hash": "j2",
            "constituency": a.code,
            "kind": "vote_cast",
            "timestamp": "2024-09-06T05:01:00Z",
            "block_number": 5,
        },
        {
            "tx_hash": "j3",
            "constituency": a.code,
            "kind": "vote_cast",
            "timestamp": "2024-09-06T05:02:00Z",
            "election": election.code,
        },
    ]
    path = _write(tmp_path / name, "\n".join(json.dumps(i) for i in items) + "\n\n")
    args = ["--format", "jsonl"] if name.endswith(".data") else []
    out, err = _import(path, *args)

    assert {t[0] for t in _stored()} == {"j1", "j2", "j3"}
    assert Transaction.objects.get(tx_hash="j2").block_number == 5
    assert "read 3, created 3, duplicates 0, conflicts 0, rejected 0" in out
    assert err == ""


def test_gzipped_csv_is_read(tmp_path, election, constituencies):
    text = HEADER + "\n" + f"g1,{constituencies[0].code},vote_cast,2024-09-06T05:00:00Z,\n"
    _import(_write(tmp_path / "tx.csv.gz", text))
    assert {t[0] for t in _stored()} == {"g1"}


def test_each_bad_line_is_reported_with_its_number_and_reason_and_the_rest_is_stored(
    tmp_path, election, constituencies
):
    a = constituencies[0]
    other = ConstituencyFactory(election=ElectionFactory(code="other-election"), code="elsewhere")
    lines = [
        HEADER,  # line 1
        f"ok1,{a.code},vote_cast,2024-09-06T05:00:00Z,1",  # 2
        f"bad-kind,{a.code},vote,2024-09-06T05:00:00Z,",  # 3
        f"naive,{a.code},vote_cast,2024-09-06 10:00,",  # 4
        f"garbage-ts,{a.code},vote_cast,yesterday,",  # 5
        "unknown-code,nope,vote_cast,2024-09-06T05:00:00Z,",  # 6
        f",{a.code},vote_cast,2024-09-06T05:00:00Z,",  # 7
        f"bad-block,{a.code},vote_cast,2024-09-06T05:00:00Z,-4",  # 8
        f"foreign,{other.code},vote_cast,2024-09-06T05:00:00Z,",  # 9
        f"short,{a.code},vote_cast",  # 10
        "",  # 11: blank lines are skipped, not rejected
        f"ok2,{a.code},bulletin_issued,2024-09-06T05:00:00+03:00,",  # 12
        f"long,{a.code},vote_cast,2024-09-06T05:00:00Z,,extra",  # 13
    ]
    out, err = _import(_write(tmp_path / "tx.csv", "\n".join(lines) + "\n"))

    assert {t[0] for t in _stored()} == {"ok1", "ok2"}
    reported = err.strip().splitlines()
    assert [line.split(":")[0] for line in reported] == [f"line {n}" for n in (3, 4, 5, 6, 7, 8, 9, 10, 13)]
    by_line = {int(line.split(":")[0].split()[1]): line for line in reported}
    assert by_line[3].startswith("line 3: kind: 'vote' is not one of")
    assert by_line[4] == "line 4: timestamp: '2024-09-06 10:00' has no UTC offset; add one such as 'Z' or '+03:00'."
    assert by_line[5].startswith("line 5: timestamp: 'yesterday' is not an ISO 8601 datetime")
    assert by_line[6] == "line 6: constituency: Unknown constituency 'nope'."
    assert by_line[7].startswith("line 7: tx_hash:")
    assert by_line[8].startswith("line 8: block_number:")
    assert by_line[9] == "line 9: constituency: Constituency elsewhere belongs to another election."
    assert by_line[10] == "line 10: expected 5 fields as in the header, got 3"
    assert by_line[13] == "line 13: expected 5 fields as in the header, got 6"
    assert "read 11, created 2, duplicates 0, conflicts 0, rejected 9" in out


def test_bad_json_lines_are_reported(tmp_path, election, constituencies):
    good = {
        "tx_hash": "j1",
        "constituency": constituencies[0].code,
        "kind": "vote_cast",
        "timestamp": "2024-09-06T05:00:00Z",
    }
    lines = [
        json.dumps(good),
        "{not json",
        "[1, 2]",
        json.dumps({**good, "tx_hash": "j2", "election": "another"}),
        json.dumps({**good, "tx_hash": "j3", "timestamp": "2024-09-06T05:00:00"}),
        json.dumps({**good, "tx_hash": 5}),
    ]
    out, err = _import(_write(tmp_path / "tx.jsonl", "\n".join(lines) + "\n"))

    assert {t[0] for t in _stored()} == {"j1"}
    assert [line.split(":")[0] for line in err.strip().splitlines()] == [
        "line 2",
        "line 3",
        "line 4",
        "line 5",
        "line 6",
    ]
    assert "line 2: not valid JSON" in err
    assert "line 3: expected a JSON object" in err
    assert "line 4: election: 'another' is not the election being imported (test-election)." in err
    assert "line 5: timestamp:" in err
    assert "has no UTC offset" in err
    assert "read 6, created 1, duplicates 0, conflicts 0, rejected 5" in out


def test_bytes_that_are_not_utf8_reject_only_their_line(tmp_path, election, constituencies):
    code = constituencies[0].code.encode()
    data = (
        HEADER.encode()
        + b"\n"
        + b"ok,"
        + code
        + b",vote_cast,2024-09-06T05:00:00Z,\n"
        + b"h\xff,"
        + code
        + b",vote_cast,2024-09-06T05:00:00Z,\n"
        + b"h2,c\xfe,"
        + b"vote_cast,2024-09-06T05:00:00Z,\n"
    )
    (tmp_path / "tx.csv").write_bytes(data)
    out, err = _import(tmp_path / "tx.csv")

    assert {t[0] for t in _stored()} == {"ok"}
    assert "line 3: tx_hash: Must be valid UTF-8 text." in err
    assert "line 4: constituency: Unknown constituency 'c\\xfe'." in err
    assert "rejected 2" in out


def test_duplicates_in_the_file_and_already_stored_are_counted_not_stored_twice(tmp_path, election, constituencies):
    a = constituencies[0]
    TransactionFactory(tx_hash="old", constituency=a, kind="bulletin_issued", timestamp=_ts(election, 5))
    lines = [HEADER] + [
        f"old,{a.code},vote_cast,2024-09-06T05:00:00Z,",  # already stored with another kind: a conflict
        f"new,{a.code},vote_cast,2024-09-06T05:00:00Z,",
        f"new,{a.code},vote_cast,2024-09-06T05:00:00Z,",  # repeated in the same batch
        f"x1,{a.code},vote_cast,2024-09-06T05:00:00Z,",
        f"x2,{a.code},vote_cast,2024-09-06T05:00:00Z,",
        f"new,{a.code},vote_cast,2024-09-06T05:00:00Z,",  # repeated in a later batch
    ]
    out, _ = _import(_write(tmp_path / "tx.csv", "\n".join(lines) + "\n"), "--batch-size", "3")

    assert Transaction.objects.count() == 4
    assert Transaction.objects.get(tx_hash="old").kind == "bulletin_issued"
    assert "read 6, created 3, duplicates 2, conflicts 1, rejected 0" in out


def test_running_the_same_import_again_changes_nothing(
    tmp_path, election, constituencies, django_capture_on_commit_callbacks
):
    lines = [HEADER] + [
        f"r{i},{constituencies[i % 6].code},{'vote_cast' if i % 2 else 'bulletin_issued'},2024-09-06T0{5 + i % 4}:00:00Z,{i}"
        for i in range(20)
    ]
    path = _write(tmp_path / "tx.csv", "\n".join(lines) + "\n")
    with django_capture_on_commit_callbacks(execute=True):
        _import(path, "--batch-size", "6")
    first = (
        _stored(),
        set(HourlyStats.objects.values_list("constituency_id", "hour", "votes_cast", "bulletins_issued")),
    )

    with django_capture_on_commit_callbacks(execute=True):
        out, _ = _import(path, "--batch-size", "6")

    assert (
        _stored(),
        set(HourlyStats.objects.values_list("constituency_id", "hour", "votes_cast", "bulletins_issued")),
    ) == first
    assert "read 20, created 0, duplicates 20, conflicts 0, rejected 0" in out


def test_each_batch_leaves_durable_dirty_marks_and_the_first_flush_consumes_them(
    tmp_path, election, constituencies, django_capture_on_commit_callbacks
):
    lines = [HEADER] + [
        f"d{i},{constituencies[i % 3].code},vote_cast,2024-09-06T0{5 + i % 3}:10:00Z," for i in range(9)
    ]
    path = _write(tmp_path / "tx.csv", "\n".join(lines) + "\n")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        _import(path, "--batch-size", "2")
    # Every touched bucket is marked in the database before any flush runs ...
    marked = set(DirtyBucket.objects.values_list("constituency_id", "hour"))
    assert marked == set(Transaction.objects.values_list("constituency_id", "hour"))
    # ... and each stored batch requests a flush after it commits (coalesced by the pipeline).
    assert len(callbacks) == 5
    for callback in callbacks:
        callback()
    assert not DirtyBucket.objects.exists()
    assert HourlyStats.objects.count() == len(marked)


def test_metrics_after_the_import_match_the_reference(tmp_path, django_capture_on_commit_callbacks):
    election = ElectionFactory(code="ref-election", timezone="Asia/Kolkata")
    constituencies = [
        ConstituencyFactory(election=election, registered_voters=voters)
        for voters in (60, 200, 500, 800, 1000, 3000, 90)
    ]
    rng = random.Random(7)
    rows = []
    for i in range(600):
        c = rng.choice(constituencies)
        kind = rng.choices(["bulletin_issued", "vote_cast", "other"], [5, 5, 1])[0]
        ts = election.starts_at + timedelta(seconds=rng.randrange(-3600, 20 * 3600))
        rows.append((f"m{i}", c, kind, ts))
    burst = constituencies[5]
    for i in range(40):  # a spike: 40 votes in one hour where every constituency has data
        rows.append((f"s{i}", burst, "vote_cast", election.starts_at + timedelta(hours=3, minutes=i)))
    for i in range(70):  # turnout over 100 % and votes exceeding bulletins
        rows.append((f"o{i}", constituencies[6], "vote_cast", election.starts_at + timedelta(hours=5, seconds=i)))
    # A resend of a hash with other content: a conflict, reported; the first one counts.
    rows.append(("m3", constituencies[0], "vote_cast", election.starts_at))
    rng.shuffle(rows)
    text = HEADER + "\n" + "".join(f"{h},{c.code},{k},{ts.isoformat()},\n" for h, c, k, ts in rows)

    with django_capture_on_commit_callbacks(execute=True):
        out, err = _import(_write(tmp_path / "tx.csv", text), "--batch-size", "97", election=election.code)
    assert "conflicts 1, rejected 0" in out
    assert err.count("conflict: tx_hash 'm3' is already stored with another") == 1

    ref_election = reference.RefElection(
        tz=election.timezone,
        starts_at=election.starts_at,
        ends_at=election.ends_at,
        registered={c.id: c.registered_voters for c in constituencies},
        transactions=[(h, c.id, k, ts) for h, c, k, ts in rows],
    )
    expected = reference.compute(ref_election, now=dj_timezone.now())
    stored = {(s.constituency_id, s.hour): s for s in HourlyStats.objects.filter(election=election)}
    assert stored.keys() == expected["hourly"].keys()
    for key, row in expected["hourly"].items():
        got = stored[key]
        assert (got.bulletins_issued, got.votes_cast, got.transaction_count, got.anomaly_count) == (
            row["bulletins_issued"],
            row["votes_cast"],
            row["transaction_count"],
            row["anomaly_count"],
        ), key
        assert got.participation_rate == pytest.approx(row["participation_rate"])
        assert got.vote_velocity == pytest.approx(row["vote_velocity"])
    found = set(Anomaly.objects.filter(election=election).values_list("constituency_id", "hour", "kind"))
    assert found == set(expected["anomalies"])
    assert {kind for _, _, kind in found} == {
        "velocity_spike",
        "turnout_over_100",
        "votes_exceed_bulletins",
        "outside_voting_window",
    }
    for c in constituencies:
        c.refresh_from_db()
        ref = expected["constituencies"][c.id]
        assert (c.total_votes_cast, c.total_transactions, c.total_anomalies) == (
            ref["total_votes_cast"],
            ref["total_transactions"],
            ref["total_anomalies"],
        )
        assert c.anomaly_score == pytest.approx(ref["anomaly_score"])


def test_unknown_election_missing_file_and_bad_header_store_nothing(tmp_path, election, constituencies):
    good = _write(tmp_path / "tx.csv", HEADER + f"\nh1,{constituencies[0].code},vote_cast,2024-09-06T05:00:00Z,\n")
    with pytest.raises(CommandError, match="No election with code 'nope'"):
        _import(good, election="nope")
    with pytest.raises(CommandError, match="No such file"):
        _import(tmp_path / "missing.csv")
    no_kind = _write(
        tmp_path / "nokind.csv", f"tx_hash,constituency,timestamp\nh1,{constituencies[0].code},2024-09-06T05:00:00Z\n"
    )
    with pytest.raises(CommandError, match="lacks required column.*kind"):
        _import(no_kind)
    with pytest.raises(CommandError, match="empty"):
        _import(_write(tmp_path / "empty.csv", ""))
    with pytest.raises(CommandError, match="format"):
        _import(_write(tmp_path / "tx.txt", "x"))
    assert not Transaction.objects.exists()


def test_strict_exits_non_zero_on_rejected_lines_but_keeps_the_valid_ones(tmp_path, election, constituencies):
    path = _write(
        tmp_path / "tx.csv",
        HEADER
        + f"\nh1,{constituencies[0].code},vote_cast,2024-09-06T05:00:00Z,\nh2,{constituencies[0].code},vote,x,\n",
    )
    with pytest.raises(CommandError, match="1 line"):
        _import(path, "--strict")
    assert {t[0] for t in _stored()} == {"h1"}


def test_a_corrupt_gzip_stream_stops_the_import_keeping_the_stored_batches_and_their_flush(
    tmp_path, election, constituencies, django_capture_on_commit_callbacks
):
    text = (
        HEADER
        + "\n"
        + "".join(
            f"z{i:04d},{constituencies[i % 6].code},vote_cast,2024-09-06T05:{i % 60:02d}:00Z,{i}\n" for i in range(3000)
        )
    )
    data = gzip.compress(text.encode())
    (tmp_path / "tx.csv.gz").write_bytes(data[: len(data) // 2])

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(CommandError, match="Cannot read"):
        _import(tmp_path / "tx.csv.gz", "--batch-size", "100")

    stored = Transaction.objects.count()
    assert 0 < stored < 3000
    assert stored % 100 == 0
    # The batches that made it are flushed all the same.
    assert not DirtyBucket.objects.exists()
    assert sum(HourlyStats.objects.values_list("votes_cast", flat=True)) == stored


@pytest.mark.django_db(transaction=True)
def test_a_command_run_outside_any_transaction_stores_batches_while_parsing_and_leaves_no_mark(tmp_path):
    # In autocommit, as in a real command run, PostgreSQL stores each batch on a second
    # connection while the next is parsed; the result must be the same as inline.
    election = ElectionFactory(code="autocommit-election")
    constituencies = ConstituencyFactory.create_batch(4, election=election, registered_voters=5000)
    lines = (
        [HEADER]
        + [
            f"a{i:05d},{constituencies[i % 4].code},{'vote_cast' if i % 2 else 'bulletin_issued'},"
            f"2024-09-06T{5 + i % 9:02d}:{i % 60:02d}:00Z,{i}"
            for i in range(2500)
        ]
        + [f"a00001,{constituencies[1].code},vote_cast,2024-09-06T06:01:00Z,1", "bad,line"]  # a resend
    )
    out, err = _import(
        _write(tmp_path / "tx.csv", "\n".join(lines) + "\n"), "--batch-size", "300", election=election.code
    )

    assert "read 2502, created 2500, duplicates 1, conflicts 0, rejected 1" in out
    assert Transaction.objects.filter(election=election).count() == 2500
    assert not DirtyBucket.objects.exists()
    assert sum(HourlyStats.objects.filter(election=election).values_list("transaction_count", flat=True)) == 2500


@pytest.mark.django_db(transaction=True)
def test_a_database_error_in_a_batch_stops_the_import_and_keeps_the_batches_before_it(tmp_path, monkeypatch):
    from django.db import OperationalError

    from elections import importers

    election = ElectionFactory(code="fault-election")
    constituency = ConstituencyFactory(election=election, registered_voters=5000)
    real_ingest, calls = importers.transactions_ingest, []

    def failing_third_batch(**kwargs):
        calls.append(len(kwargs["rows"]))
        if len(calls) == 3:
            raise OperationalError("simulated: the database went away")
        return real_ingest(**kwargs)

    monkeypatch.setattr(importers, "transactions_ingest", failing_third_batch)
    lines = [HEADER] + [f"f{i:04d},{constituency.code},vote_cast,2024-09-06T05:{i % 60:02d}:00Z," for i in range(1000)]
    with pytest.raises(OperationalError, match="simulated"):
        _import(_write(tmp_path / "tx.csv", "\n".join(lines) + "\n"), "--batch-size", "100", election=election.code)

    # The two batches stored before the fault are kept, and flushed.
    assert Transaction.objects.filter(election=election).count() == 200
    assert not DirtyBucket.objects.exists()
    assert HourlyStats.objects.get(election=election).votes_cast == 200


# --- malformed lines reject only themselves (SPEC section 10) ---------------------------------


def _lines_csv(constituencies, n: int) -> list[str]:
    return [
        f"q{i:05d},{constituencies[i % len(constituencies)].code},vote_cast,2024-09-06T{5 + i % 9:02d}:{i % 60:02d}:00Z,{i}"
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('q-bad,c0000,"vote_cast,2024-09-06T05:00:00Z,1', "a quoted field is not closed on this line"),
        ('"q-bad"x,c0000,vote_cast,2024-09-06T05:00:00Z,1', "',' expected after '\"'"),
        ('"q-bad,c0000,vote_cast,2024-09-06T05:00:00Z,1', "a quoted field is not closed on this line"),
    ],
    ids=["quote-opened-mid-line", "text-after-closing-quote", "quote-opened-at-start"],
)
def test_a_stray_csv_quote_rejects_its_line_and_the_import_goes_on(tmp_path, election, constituencies, bad, reason):
    good = _lines_csv(constituencies, 500)
    lines = [HEADER, good[0], bad, *good[1:]]  # the stray quote on line 3 of 502
    assert len(lines) == 502

    out, err = _import(_write(tmp_path / "tx.csv", "\n".join(lines) + "\n"))

    assert "read 501, created 500, duplicates 0, conflicts 0, rejected 1" in out
    assert len(err.strip().splitlines()) == 1
    assert f"line 3: not valid CSV ({reason}" in err
    assert Transaction.objects.count() == 500
    assert set(Transaction.objects.values_list("tx_hash", flat=True)) == {line.split(",")[0] for line in good}


def test_quoted_fields_that_close_on_their_line_are_read(tmp_path, election, constituencies):
    code = constituencies[0].code
    lines = [
        HEADER,
        f'"q,1",{code},vote_cast,2024-09-06T05:00:00Z,1',
        f'"q""2",{code},"vote_cast",2024-09-06T05:00:00Z,',
    ]
    out, _ = _import(_write(tmp_path / "tx.csv", "\n".join(lines) + "\n"))

    assert "read 2, created 2, duplicates 0, conflicts 0, rejected 0" in out
    assert set(Transaction.objects.values_list("tx_hash", flat=True)) == {"q,1", 'q"2'}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("[" * 100_000, "nested deeper than 32 levels"),
        (
            '{"tx_hash": "x", "constituency": "c0000", "kind": "vote_cast", "timestamp": "2024-09-06T05:00:00Z", '
            '"block_number": NaN}',
            "NaN is not valid JSON",
        ),  # fmt: skip
        (
            '{"tx_hash": "x", "constituency": "c0000", "kind": "vote_cast", "timestamp": "2024-09-06T05:00:00Z", '
            '"block_number": 1e999}',
            "out of range",
        ),  # fmt: skip
        (
            '{"tx_hash": "x", "tx_hash": "y", "constituency": "c0000", "kind": "vote_cast", '
            '"timestamp": "2024-09-06T05:00:00Z"}',
            'the key "tx_hash" appears twice',
        ),  # fmt: skip
        (
            '{"tx_hash": "\\ud800", "constituency": "c0000", "kind": "vote_cast", "timestamp": "2024-09-06T05:00:00Z"}',
            "lone surrogate",
        ),  # fmt: skip
        (
            '{"tx_hash": "x", "constituency": "CODE", "kind": "vote_cast", "timestamp": "2030-01-01T00:00:00Z"}',
            "30 days outside the election's voting window",
        ),  # fmt: skip
    ],
    ids=["deep", "nan", "float-overflow", "duplicate-key", "lone-surrogate", "beyond-the-window"],
)
def test_a_pathological_json_line_rejects_only_itself(tmp_path, election, constituencies, bad, reason):
    good = [
        json.dumps({"tx_hash": f"j{i}", "constituency": constituencies[i % 6].code, "kind": "vote_cast",
                    "timestamp": f"2024-09-06T0{5 + i % 4}:00:00Z"})
        for i in range(20)
    ]  # fmt: skip
    bad = bad.replace("CODE", constituencies[0].code)
    out, err = _import(_write(tmp_path / "tx.jsonl", "\n".join([*good[:5], bad, *good[5:]]) + "\n"))

    assert "read 21, created 20, duplicates 0, conflicts 0, rejected 1" in out
    assert "line 6: " in err
    assert reason in err
    assert Transaction.objects.count() == 20


def test_an_undecodable_json_line_rejects_only_itself(tmp_path, election, constituencies):
    code = constituencies[0].code
    good = [json.dumps({"tx_hash": f"u{i}", "constituency": code, "kind": "vote_cast",
                        "timestamp": "2024-09-06T05:00:00Z"}).encode() for i in range(3)]  # fmt: skip
    bad = b'{"tx_hash": "\xff\xfe", "constituency": "' + code.encode() + b'", "kind": "vote_cast", "timestamp": "x"}'
    (tmp_path / "tx.jsonl").write_bytes(b"\n".join([good[0], bad, b"\xc3\x28\xa0", *good[1:]]) + b"\n")

    out, err = _import(tmp_path / "tx.jsonl")

    assert "read 5, created 3, duplicates 0, conflicts 0, rejected 2" in out
    assert "line 2: tx_hash: Must be valid UTF-8 text." in err
    assert "line 3: not valid JSON" in err


def test_every_line_read_is_counted_once_in_the_summary(tmp_path, election, constituencies):
    """read = created + duplicates + rejected on a seeded mix of good, repeated and bad
    lines, and what is stored is exactly the good lines, first of each tx_hash."""
    rng = random.Random(11)
    TransactionFactory(tx_hash="stored-before", constituency=constituencies[0])
    bad_lines = ['x,"unclosed', "only,two", f"z,{constituencies[0].code},vote_cast,not-a-date,", "", "  "]
    lines, expected = [HEADER], set()
    for i in range(400):
        roll = rng.random()
        if roll < 0.15:
            lines.append(rng.choice(bad_lines))
        elif roll < 0.25:
            lines.append(
                rng.choice([*lines[1:], f"stored-before,{constituencies[0].code},vote_cast,2024-09-06T05:00:00Z,"])
            )
        else:
            lines.append(f"m{i},{constituencies[i % 6].code},bulletin_issued,2024-09-06T06:{i % 60:02d}:00Z,{i}")
    valid_order = []
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) == 5 and fields[3] != "not-a-date" and '"' not in line:
            valid_order.append(fields[0])
    expected = {h for h in valid_order if h != "stored-before"}
    data_lines = sum(1 for line in lines[1:] if line.strip())

    out, _ = _import(_write(tmp_path / "tx.csv", "\n".join(lines) + "\n"), "--batch-size", "37")

    summary = out.strip().splitlines()[-1]
    counts = dict(part.rsplit(" ", 1) for part in summary.split(": ", 1)[1].split(", "))
    counts = {name: int(value) for name, value in counts.items()}
    assert counts["read"] == data_lines
    assert counts["read"] == counts["created"] + counts["duplicates"] + counts["rejected"]
    assert counts["created"] == len(expected)
    assert counts["duplicates"] == len(valid_order) - len(expected)
    assert set(Transaction.objects.values_list("tx_hash", flat=True)) == expected | {"stored-before"}
