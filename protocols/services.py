"""The one write path of protocols (SPEC section 11): import a commission's file, replacing the
election's protocols and options in one database transaction. Missing constituencies are
created through the elections write path (``constituencies_upsert``), which announces them.

Memory stays flat (but for the set of station codes seen, to refuse a station given twice):
stations are stored in batches as they are read, each batch with one query for its existing
constituencies, one bulk insert of the missing ones and one bulk insert (binary COPY on
PostgreSQL, election_monitor.bulk_sql) of its protocols. The whole import is one database
transaction, so a failure or a file without a single valid station leaves the previous
protocols as they were.
"""

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from election_monitor import bulk_sql
from elections.models import Constituency, Election
from elections.services import constituencies_upsert
from elections.signals import WHOLE_ELECTION, buckets_changed
from protocols.importers import (
    Empty,
    ImportFileError,
    Rejected,
    Station,
    layout_read,
    open_protocol_file,
    printable,
    stations_read,
)
from protocols.layouts import FIELDS
from protocols.models import ElectionOption, ProtocolImport, ProtocolResult

DEFAULT_BATCH_SIZE = 5000
PROTOCOL_COLUMNS = (
    "election_id",
    "constituency_id",
    "protocol_import_id",
    "line",
    *FIELDS,
    "votes",
)

OnRejected = Callable[[int, str], None]


@dataclass
class ProtocolImportReport:
    import_id: int | None = None
    file_format: str = ""
    read: int = 0  # data lines, blank lines not counted
    stored: int = 0
    skipped_empty: int = 0
    rejected: int = 0
    constituencies_created: int = 0
    options: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


def protocols_import(
    *,
    path: Path,
    election: Election,
    file_format: str | None = None,
    on_rejected: OnRejected,
    on_progress: Callable[[int, int], None] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ProtocolImportReport:
    """Replace ``election``'s protocols with those of the file; returns the counts.

    Rejected lines are reported through ``on_rejected(line, reason)`` as they are met and
    the valid ones are stored. Raises ImportFileError, with nothing changed, when the file
    cannot be read as a protocol file or holds no valid station.
    """
    report = ProtocolImportReport()
    with open_protocol_file(path) as (text, raw):
        size = path.stat().st_size
        reader = csv.reader(text, strict=True)
        layout = layout_read(reader, file_format)
        report.file_format = layout.file_format
        report.options = [name for _, name in layout.options]
        report.ignored_columns = [printable(c) for c in layout.ignored]
        seen: dict[str, int] = {}  # station code -> line, to reject a station given twice
        with transaction.atomic():
            # Two imports of one election at once would both replace the same rows: the second
            # waits here for the first to commit.
            Election.objects.select_for_update().filter(pk=election.pk).first()
            record = ProtocolImport.objects.create(
                election=election, source=path.name[:500], file_format=layout.file_format
            )
            ProtocolResult.objects.filter(election=election).delete()
            ElectionOption.objects.filter(election=election).delete()
            ElectionOption.objects.bulk_create(
                ElectionOption(election=election, position=position, name=name[:500])
                for position, name in enumerate(report.options)
            )
            batch: list[Station] = []
            for item in stations_read(reader, layout):
                report.read += 1
                if isinstance(item, Empty):
                    report.skipped_empty += 1
                    continue
                if isinstance(item, Station) and item.code in seen:
                    item = Rejected(item.line, f"station {item.name} already appears on line {seen[item.code]}")
                if isinstance(item, Rejected):
                    report.rejected += 1
                    on_rejected(item.line, item.reason)
                    continue
                seen[item.code] = item.line
                batch.append(item)
                if len(batch) >= batch_size:
                    _batch_store(batch, election=election, record=record, report=report)
                    batch = []
                    if on_progress:
                        on_progress(raw.tell(), size)
            if batch:
                _batch_store(batch, election=election, record=record, report=report)
            if not report.stored:
                raise ImportFileError(
                    f"{path.name} holds no valid station ({report.rejected} rejected, {report.skipped_empty} "
                    "empty). Nothing was changed."
                )
            for name in ("read", "stored", "skipped_empty", "rejected", "constituencies_created"):
                setattr(record, name, getattr(report, name))
            record.save(update_fields=["read", "stored", "skipped_empty", "rejected", "constituencies_created"])
            # The stream is now reconciled against other protocols: every constituency's
            # stream_protocol_mismatch may come or go (docs/METRICS.md#stream_protocol_mismatch).
            buckets_changed.send(sender=ProtocolResult, election_id=election.id, buckets={WHOLE_ELECTION})
    report.import_id = record.id
    if on_progress:
        on_progress(size, size)
    return report


def _batch_store(batch: list[Station], *, election: Election, record: ProtocolImport, report) -> None:
    ids = dict(
        Constituency.objects.filter(election=election, code__in=[s.code for s in batch]).values_list("code", "id")
    )
    missing = {s.code: (s.name, s.counts[0]) for s in batch if s.code not in ids}
    if missing:
        # Through the write path of constituencies: one bulk insert, announced in this transaction.
        created, _ = constituencies_upsert(election_id=election.id, wanted=missing)
        ids.update(Constituency.objects.filter(election=election, code__in=list(missing)).values_list("code", "id"))
        report.constituencies_created += created
    rows = [(election.id, ids[s.code], record.id, s.line, *s.counts, list(s.votes)) for s in batch]
    bulk_sql.rows_insert(ProtocolResult, PROTOCOL_COLUMNS, rows)
    report.stored += len(batch)
