"""Investigation (docs/FORENSICS.md, "Reconciliation: Moscow's remote e-voting, 2021"): the stream
of Moscow's 2021 remote e-voting rebuilt from its 20-minute counts, against the commission's
protocols of the fifteen e-voting pseudo-stations (UIK 5001-5015, one per district 196-210).

Not product code: it drives the product through its own doors (import_protocols' service,
import_transactions, backfill_metrics, the reconciliation endpoint) on data from the shared
folder, and prints what the endpoint answers. Each decrypted ballot of a 20-minute bin becomes
one ``vote_cast`` transaction inside that bin; the counts have no "ballot issued" records, so
the stream has no bulletins. Run against your own database:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/em_forensics REDIS_URL=redis://127.0.0.1:6379/3 \\
    .venv/bin/python bench/moscow_deg_reconciliation.py
"""

import csv
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ELECTION_DATA_DIR", ROOT.parent / "shared" / "data"))
CODE = "moscow-deg-2021"
FIRST_STATION, LAST_STATION = 5001, 5015
DISTRICT_OF_STATION = {f"УИК №{5001 + i}": str(196 + i) for i in range(15)}


def protocols_file(folder: Path) -> Path:
    """The header and the fifteen Moscow e-voting rows of kobak_2021.csv."""
    target = folder / "moscow_deg_protocols.csv"
    with (
        open(DATA / "kobak_2021.csv", encoding="utf-8", newline="") as source,
        open(target, "w", encoding="utf-8", newline="") as out,
    ):
        reader, writer = csv.reader(source), csv.writer(out)
        header = next(reader)
        writer.writerow(header)
        region, uik = header.index("region"), header.index("uik")
        for row in reader:
            if row[region] == "город Москва" and row[uik] in DISTRICT_OF_STATION:
                writer.writerow(row)
    return target


def stream_file(folder: Path, codes: dict[str, str]) -> tuple[Path, int]:
    """One vote_cast per decrypted ballot, spread evenly over its 20-minute bin."""
    target = folder / "moscow_deg_stream.csv"
    written = 0
    with (
        open(DATA / "deg2021_moscow_party_list_20min.csv", encoding="utf-8", newline="") as source,
        open(target, "w", newline="") as out,
    ):
        reader, writer = csv.reader(source), csv.writer(out)
        next(reader)  # the header: district, bin start, then one column per party
        writer.writerow(["tx_hash", "constituency", "kind", "timestamp"])
        for row in reader:
            district, start_ms = row[0], int(row[1])
            start = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
            total = sum(int(v) for v in row[4:])
            step = timedelta(minutes=20) / max(total, 1)
            for k in range(total):
                moment = start + step * (k + 0.5)
                writer.writerow([f"deg21-{district}-{start_ms}-{k}", codes[district], "vote_cast", moment.isoformat()])
            written += total
    return target, written


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "election_monitor.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from elections.models import Constituency, Election
    from protocols.services import protocols_import

    Election.objects.filter(code=CODE).delete()
    election = Election.objects.create(
        code=CODE,
        name="Moscow remote e-voting, State Duma 2021 (party list)",
        timezone="Europe/Moscow",
        starts_at=datetime(2021, 9, 17, 5, tzinfo=UTC),  # 08:00 MSK
        ends_at=datetime(2021, 9, 19, 17, tzinfo=UTC),  # 20:00 MSK
    )
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        report = protocols_import(path=protocols_file(folder), election=election, on_rejected=print)
        print(f"protocols: {report.stored} stations")
        codes = {}
        for constituency in Constituency.objects.filter(election=election):
            station = constituency.name.rsplit(" / ", 1)[1]
            codes[DISTRICT_OF_STATION[station]] = constituency.code
        stream, written = stream_file(folder, codes)
        print(f"stream: {written:,} vote_cast transactions")
        call_command("import_transactions", str(stream), "--election", CODE, "--no-progress")
    call_command("backfill_metrics", "--election", CODE)
    body = APIClient().get(f"/api/forensics/election/{election.id}/reconciliation/").json()
    print("| station | district | stream votes | protocol ballots | difference | registered (protocol) | mismatch |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    names = dict(Constituency.objects.filter(election=election).values_list("id", "name"))
    for item in body["results"]:
        station = names[item["constituency_id"]].rsplit(" / ", 1)[1]
        print(
            f"| {station} | {DISTRICT_OF_STATION[station]} | {item['votes_cast']:,} | {item['ballots_cast']:,} | "
            f"{item['votes_difference']:+,} | {item['protocol_registered_voters']:,} | {item['mismatch']} |"
        )
    totals = body["totals"]
    print(
        f"| total | | {totals['votes_cast']:,} | {totals['ballots_cast']:,} | {totals['votes_difference']:+,} | "
        f"{totals['protocol_registered_voters']:,} | {totals['mismatches']} of {totals['constituencies']} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
