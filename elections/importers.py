"""File imports (README, Management commands): stream CSV / JSON Lines files into the ingest services.

Files are read line by line in binary and decoded per line, so a bad byte, a bad field or a
wrong column count rejects that one line (with its number) and never the file; only a
problem the whole file shares (no such file, a header without a required column, a broken
gzip stream) stops the import. Transactions go through the same validator and the same
insert path as the API, one database transaction per batch, so memory stays flat however
large the file is and a crash keeps every batch already stored (re-running is idempotent).
"""

import csv
import gzip
import io
import logging
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar

from django.db import connection, connections

from election_monitor.parsers import strict_loads
from elections import selectors
from elections.models import Constituency, Election, IngestSource
from elections.services import (
    IngestResult,
    Origin,
    RowError,
    TransactionRow,
    constituencies_upsert,
    transaction_row_parse,
    transactions_ingest,
)

logger = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl")
EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
TRANSACTION_COLUMNS = ("tx_hash", "constituency", "kind", "timestamp")
TRANSACTION_OPTIONAL_COLUMNS = ("block_number", "election")
CONSTITUENCY_COLUMNS = ("code", "name", "registered_voters")
DEFAULT_BATCH_SIZE = 10_000
READ_BUFFER = 1 << 20
CODE_MAX_LENGTH = Constituency._meta.get_field("code").max_length
NAME_MAX_LENGTH = Constituency._meta.get_field("name").max_length
REGISTERED_VOTERS_MAX = 2_147_483_647  # PositiveIntegerField's range on every backend

# Rejections are reported to a callback as they happen: (line number, reason).
OnRejected = Callable[[int, str], None]


class ImportFileError(Exception):
    """The file as a whole cannot be imported (nothing of it was stored unless stated)."""


class _BadLine(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def file_format_detect(path: Path, requested: str | None = None) -> tuple[str, bool]:
    """(format, gzipped) from ``--format`` or the file name: .csv, .jsonl/.ndjson, optionally .gz."""
    suffixes = [s.lower() for s in path.suffixes]
    gzipped = bool(suffixes) and suffixes[-1] == ".gz"
    if gzipped:
        suffixes.pop()
    if requested:
        return requested, gzipped
    fmt = EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise ImportFileError(
            f"Cannot tell the format of {path.name} from its name; use .csv, .jsonl or .ndjson "
            "(optionally .gz), or pass --format csv|jsonl."
        )
    return fmt, gzipped


class _Source:
    """Text lines of a file (gzip or plain) with the on-disk byte position for progress.

    Subtle: bytes that are not UTF-8 are decoded with ``surrogateescape`` instead of failing
    the whole file; they can only reach the database through ``tx_hash``, which the
    validator refuses when it holds such characters, and every other field fails its own
    check, so the line is rejected with a reason that shows the bytes.
    """

    def __init__(self, path: Path, gzipped: bool):
        try:
            self.raw = open(path, "rb")  # noqa: SIM115 (closed by _open)
        except FileNotFoundError:
            raise ImportFileError(f"No such file: {path}") from None
        except IsADirectoryError:
            raise ImportFileError(f"{path} is a directory, not a file.") from None
        except OSError as error:
            raise ImportFileError(f"Cannot open {path}: {error.strerror or error}") from None
        self.size = path.stat().st_size
        binary = io.BufferedReader(gzip.GzipFile(fileobj=self.raw, mode="rb"), READ_BUFFER) if gzipped else self.raw
        self.text = io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="")

    def position(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.text.close()
        self.raw.close()


@contextmanager
def _open(path: Path, gzipped: bool):
    source = _Source(path, gzipped)
    try:
        yield source
    except (OSError, EOFError, zlib.error) as error:
        # A truncated or corrupt gzip stream, or a read error: the batches before it stay stored.
        raise ImportFileError(
            f"Cannot read {path} to the end ({error}); the lines before that were processed."
        ) from None
    finally:
        source.close()


def printable(text: str) -> str:
    """Show undecodable bytes as \\xNN instead of failing to print them."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _lines(source: _Source) -> Iterator[tuple[int, str]]:
    """(line number, text) of every physical line."""
    return enumerate(source.text, 1)


def _csv_fields(text: str) -> list[str]:
    """The fields of one physical line; raises csv.Error.

    Subtle: a record never spans lines. The csv module would let a stray quote open a field
    that swallows every following line up to the next quote (the rest of a file, often);
    no column of these files may hold a line break, so a quote left open is an error of
    this line alone and the next line is read afresh. Lines without a quote, nearly all of
    them, are split directly (the csv module splits them the same way).
    """
    text = text.rstrip("\r\n")
    if '"' not in text:
        return text.split(",")
    try:
        return next(csv.reader((text,), strict=True), [])
    except csv.Error as error:
        if "unexpected end of data" in str(error):
            raise csv.Error("a quoted field is not closed on this line (fields cannot span lines)") from None
        raise


def _csv_header(lines: Iterator[tuple[int, str]], required: tuple, optional: tuple = ()) -> list[str]:
    """Read and check the header line; return its column names. Rows are checked by the caller."""
    _, first = next(lines, (1, ""))
    try:
        header = _csv_fields(first)
    except csv.Error as error:
        raise ImportFileError(f"line 1: the header is not valid CSV ({error}). Nothing was stored.") from None
    if not header or not any(h.strip() for h in header):
        raise ImportFileError(f"The file is empty: expected a header line {','.join(required)}. Nothing was stored.")
    columns = [h.strip().lstrip("\ufeff").strip().lower() for h in header]
    missing = [c for c in required if c not in columns]
    if missing:
        raise ImportFileError(
            f"The header lacks required column(s) {', '.join(missing)}: expected "
            f"{','.join(required)}"
            + (f" and optionally {','.join(optional)}" if optional else "")
            + f", got {printable(','.join(columns))}. Nothing was stored."
        )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ImportFileError(
            f"The header names column(s) {printable(', '.join(repeated))} more than once. Nothing was stored."
        )
    return columns


def _csv_records(lines: Iterator[tuple[int, str]], columns: list[str], wanted: tuple) -> Iterator:
    """(line number, {name: value} for the ``wanted`` columns present | _BadLine), blank lines skipped."""
    width = len(columns)
    picks = [(name, columns.index(name)) for name in wanted if name in columns]
    for line, text in lines:
        try:
            fields = _csv_fields(text)
        except csv.Error as error:
            yield line, _BadLine(f"not valid CSV ({error})")
            continue
        if len(fields) != width:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            yield line, _BadLine(f"expected {width} fields as in the header, got {len(fields)}")
            continue
        yield line, {name: fields[i] for name, i in picks}


def _jsonl_records(source: _Source) -> Iterator:
    """(line number, object | _BadLine): a line that is not JSON, or is pathological JSON
    (election_monitor.parsers refuses the same as the API does), is rejected alone."""
    for line, text in _lines(source):
        if not text.strip():
            continue
        try:
            value = strict_loads(text)
        except ValueError as error:
            yield line, _BadLine(f"not valid JSON ({error})")
            continue
        yield line, value if isinstance(value, dict) else _BadLine("expected a JSON object")


# --- transactions -----------------------------------------------------------------------


@dataclass
class TransactionImportReport:
    """What became of every data line read: each ends in exactly one of OUTCOMES, so
    ``read`` equals their sum (a new outcome is a field here and a name in OUTCOMES)."""

    OUTCOMES: ClassVar[tuple[str, ...]] = ("created", "duplicates", "conflicts", "rejected")

    read: int = 0  # data lines (blank lines are not counted)
    created: int = 0
    duplicates: int = 0  # already stored, or repeated in the file, with the same content
    conflicts: int = 0  # already stored, or earlier in the file, with other content: not stored
    rejected: int = 0
    ignored_columns: list[str] = field(default_factory=list)

    def accounted(self) -> int:
        return sum(getattr(self, name) for name in self.OUTCOMES)

    def summary(self) -> str:
        """``read N, created A, duplicates B, conflicts C, rejected D`` (N = A + B + C + D), as printed."""
        return ", ".join(f"{name} {getattr(self, name)}" for name in ("read", *self.OUTCOMES))


def constituency_lookup_by_code(*, election: Election) -> Callable:
    """Resolve constituency codes of one election from a single query. A code that exists
    only in another election resolves to that constituency, so the validator names the
    real problem ("belongs to another election") instead of "unknown"."""
    codes = {c.code: c for c in Constituency.objects.filter(election=election).only("id", "election_id", "code")}
    elsewhere: dict[str, Constituency] | None = None

    def lookup(value):
        nonlocal elsewhere
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            return None
        found = codes.get(value) or codes.get(value.strip())
        if found is None:
            if elsewhere is None:  # loaded once, on the first miss
                elsewhere = {
                    c.code: c for c in Constituency.objects.exclude(election=election).only("id", "election_id", "code")
                }
            found = elsewhere.get(value.strip())
        return found

    return lookup


def transactions_import(
    *,
    path: Path,
    election: Election,
    fmt: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_rejected: OnRejected,
    on_progress: Callable[[int, int], None] | None = None,
) -> TransactionImportReport:
    """Import a transactions file into ``election``; returns the counts.

    Each batch is stored by transactions_ingest in its own database transaction, which
    announces its buckets like every other write: metrics follow while the import runs,
    and a failure half-way keeps (and has announced) every batch already stored.
    ``on_progress(position, size)`` reports bytes of the file on disk.
    """
    fmt, gzipped = file_format_detect(path, fmt)
    if election.certified_at is not None:
        raise ImportFileError(f"Election {election.code} is certified: its data can no longer change.")
    origin = Origin(IngestSource.IMPORT, user=None, label=path.name)
    lookup = constituency_lookup_by_code(election=election)
    window = selectors.election_window_lookup()
    accepted_elections = {election.code, str(election.id)}
    report = TransactionImportReport()
    with _open(path, gzipped) as source:
        if fmt == "csv":
            known = TRANSACTION_COLUMNS + TRANSACTION_OPTIONAL_COLUMNS
            lines = _lines(source)
            columns = _csv_header(lines, TRANSACTION_COLUMNS, TRANSACTION_OPTIONAL_COLUMNS)
            report.ignored_columns = [printable(c) for c in columns if c not in known]
            records = _csv_records(lines, columns, known)
        else:
            records = _jsonl_records(source)

        def stored(result: IngestResult, lines: list[int]) -> None:
            report.created += result.created
            report.duplicates += result.duplicates
            report.conflicts += len(result.conflicts)
            for conflict in result.conflicts:
                on_rejected(lines[conflict.index], printable(f"conflict: {conflict.message()}"))

        writer = _BatchWriter(on_stored=stored, origin=origin)
        rows: list[TransactionRow] = []
        lines: list[int] = []
        failed = True
        try:
            for line, record in records:
                report.read += 1
                try:
                    if isinstance(record, _BadLine):
                        raise record
                    # The file may name the election (by code or id); the validator's own
                    # "election" check compares ids, so the key is settled here and dropped.
                    claimed = record.pop("election", None)
                    if claimed not in (None, "") and str(claimed).strip() not in accepted_elections:
                        raise _BadLine(f"election: '{claimed}' is not the election being imported ({election.code}).")
                    rows.append(
                        transaction_row_parse(
                            record, constituency_lookup=lookup, election_id=election.id, election_window=window
                        )
                    )
                    lines.append(line)
                except (_BadLine, RowError) as error:
                    report.rejected += 1
                    on_rejected(line, printable(error.reason if isinstance(error, _BadLine) else str(error)))
                    continue
                if len(rows) >= batch_size:
                    writer.submit(rows, lines)
                    rows, lines = [], []
                    if on_progress:
                        on_progress(source.position(), source.size)
            if rows:
                writer.submit(rows, lines)
            failed = False
        finally:
            writer.close(raise_errors=not failed)
    if on_progress:
        on_progress(source.size, source.size)
    return report


class _BatchWriter:
    """Stores batches with transactions_ingest, one database transaction each.

    On PostgreSQL a background thread stores a batch while the next one is parsed, so the
    database and the parser work at the same time (the machine has more than one core).
    Subtle: the thread has its own connection, which cannot see a transaction the caller
    has open; the overlap is used only when the caller is in autocommit (a command run),
    otherwise (a test's transaction, an outer atomic block) batches are stored inline.
    At most one batch is in flight, so memory stays at about two batches.
    """

    def __init__(self, *, on_stored: Callable[[IngestResult, list[int]], None], origin: Origin):
        self.on_stored = on_stored
        self.origin = origin
        overlap = connection.vendor == "postgresql" and not connection.in_atomic_block
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-ingest") if overlap else None
        self.pending: Future | None = None

    def submit(self, rows: list[TransactionRow], lines: list[int]) -> None:
        store = partial(transactions_ingest, rows=rows, origin=self.origin, conflicts="count")
        if self.pool is None:
            self.on_stored(store(), lines)
            return
        self._wait()
        self.pending, self.pending_lines = self.pool.submit(store), lines

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self.on_stored(pending.result(), self.pending_lines)

    def close(self, *, raise_errors: bool) -> None:
        """Wait for the batch in flight (its counts matter to the flush) and close the
        thread's connection. When the import already failed, the original error wins."""
        if self.pool is None:
            return
        try:
            self._wait()
        except Exception:
            if raise_errors:
                raise
            logger.warning("a batch in flight failed while the import was stopping", exc_info=True)
        finally:
            self.pool.submit(connections.close_all).result()
            self.pool.shutdown()


# --- constituencies ---------------------------------------------------------------------


@dataclass
class ConstituencyImportReport:
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    ignored_columns: list[str] = field(default_factory=list)


def _constituency_parse(record: dict) -> tuple[str, str, int]:
    code = (record.get("code") or "").strip()
    if not code:
        raise _BadLine("code: This field is required.")
    if len(code) > CODE_MAX_LENGTH:
        raise _BadLine(f"code: At most {CODE_MAX_LENGTH} characters.")
    name = (record.get("name") or "").strip()
    if not name:
        raise _BadLine("name: This field is required.")
    if len(name) > NAME_MAX_LENGTH:
        raise _BadLine(f"name: At most {NAME_MAX_LENGTH} characters.")
    for label, value in (("code", code), ("name", name)):
        if "\x00" in value:
            raise _BadLine(f"{label}: NUL characters are not allowed.")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _BadLine(f"{label}: not valid UTF-8.") from None
    text = (record.get("registered_voters") or "").strip()
    try:
        voters = int(text)
    except ValueError:
        raise _BadLine(f"registered_voters: '{text}' is not a whole number.") from None
    if not 0 < voters <= REGISTERED_VOTERS_MAX:
        raise _BadLine(f"registered_voters: must be between 1 and {REGISTERED_VOTERS_MAX}, got {voters}.")
    return code, name, voters


def constituencies_import(*, path: Path, election: Election, on_rejected: OnRejected) -> ConstituencyImportReport:
    """Create or update the election's constituencies from a CSV code,name,registered_voters.

    Upserts by (election, code) in one database transaction (elections.services).
    """
    _, gzipped = file_format_detect(path, "csv")
    report = ConstituencyImportReport()
    wanted: dict[str, tuple[int, str, int]] = {}  # code -> (line, name, voters)
    with _open(path, gzipped) as source:
        lines = _lines(source)
        columns = _csv_header(lines, CONSTITUENCY_COLUMNS)
        report.ignored_columns = [printable(c) for c in columns if c not in CONSTITUENCY_COLUMNS]
        records = _csv_records(lines, columns, CONSTITUENCY_COLUMNS)
        for line, record in records:
            report.read += 1
            try:
                if isinstance(record, _BadLine):
                    raise record
                code, name, voters = _constituency_parse(record)
                if code in wanted:
                    raise _BadLine(f"code: '{code}' already appears on line {wanted[code][0]}.")
            except _BadLine as error:
                report.rejected += 1
                on_rejected(line, printable(error.reason))
                continue
            wanted[code] = (line, name, voters)

    created, updated = constituencies_upsert(
        election_id=election.id, wanted={code: (name, voters) for code, (_, name, voters) in wanted.items()}
    )
    report.created, report.updated = created, updated
    report.unchanged = len(wanted) - created - updated
    return report
