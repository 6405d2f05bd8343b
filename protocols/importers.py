"""Reading protocol files: a stream of parsed stations, rejected lines and skipped empty rows.

No database here: protocols.services stores what this yields. Files are read as text line by
line (UTF-8; undecodable bytes are kept as escapes so the line is rejected with a reason that
shows them), so memory stays flat whatever the file's size.
"""

import csv
import gzip
import hashlib
import io
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from protocols.layouts import FIELDS, Layout, LayoutError, layout_detect

CODE_MAX_LENGTH = 64
NAME_MAX_LENGTH = 255
COUNT_MAX = 2_147_483_647  # PositiveIntegerField's range on every backend
READ_BUFFER = 1 << 20
_DIGITS = re.compile(r"\d+")


class ImportFileError(Exception):
    """The file as a whole cannot be imported; nothing was stored."""


@dataclass(frozen=True)
class Station:
    """One parsed protocol: ``counts`` in the order of layouts.FIELDS, ``votes`` per option."""

    line: int
    code: str
    name: str
    counts: tuple[int, ...]
    votes: tuple[int, ...]


@dataclass(frozen=True)
class Rejected:
    line: int
    reason: str


@dataclass(frozen=True)
class Empty:
    """A row whose results are all empty (or all zero with nobody registered): not a protocol."""

    line: int


def station_code(*, region: str, tik: str, uik: str, oik: str = "") -> str:
    """A stable code of at most 64 characters for a commission row: the station's number and a
    digest of its full identity (region + territorial commission + number). Remote e-voting
    rows have no station number; their district commission (oik) tells them apart."""
    number = uik.strip()
    identity = "|".join((region.strip(), tik.strip(), number if number else f"oik:{oik.strip()}"))
    digest = hashlib.sha1(identity.encode("utf-8", "surrogateescape"), usedforsecurity=False).hexdigest()[:12]
    digits = _DIGITS.findall(number) if number else _DIGITS.findall(oik)
    prefix = ("" if number else "oik") + (digits[-1] if digits else "x")
    return f"{prefix}-{digest}"


def station_name(*, region: str, tik: str, uik: str, oik: str = "") -> str:
    parts = [p.strip() for p in (region, tik, uik if uik.strip() else f"{oik} (remote e-voting)") if p.strip()]
    return " / ".join(parts)[:NAME_MAX_LENGTH]


def printable(text: str) -> str:
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@contextmanager
def open_protocol_file(path: Path):
    """(text stream, raw binary file) of a plain or gzipped file."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise ImportFileError(f"No such file: {path}") from None
    except IsADirectoryError:
        raise ImportFileError(f"{path} is a directory, not a file.") from None
    except OSError as error:
        raise ImportFileError(f"Cannot open {path}: {error.strerror or error}") from None
    binary = io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), READ_BUFFER) if path.suffix == ".gz" else raw
    text = io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="")
    try:
        yield text, raw
    except (OSError, EOFError, zlib.error) as error:
        raise ImportFileError(f"Cannot read {path} to the end ({error}). Nothing was stored.") from None
    finally:
        text.close()
        raw.close()


def header_read(reader) -> list[str]:
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise ImportFileError(f"line 1: the header is not valid CSV ({error}). Nothing was stored.") from None
    if not header or not any(h.strip() for h in header):
        raise ImportFileError("The file is empty: expected a header line. Nothing was stored.")
    return header


def layout_read(reader, file_format: str | None) -> Layout:
    header = header_read(reader)
    try:
        return layout_detect([printable(h) for h in header], file_format)
    except LayoutError as error:
        raise ImportFileError(str(error)) from None


def stations_read(reader, layout: Layout) -> Iterator[Station | Rejected | Empty]:
    """Parse every data line after the header; blank lines are skipped silently."""
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield Rejected(reader.line_num, f"not valid CSV ({error})")
            continue
        line = reader.line_num
        if len(fields) != layout.width:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            yield Rejected(line, f"expected {layout.width} fields as in the header, got {len(fields)}")
            continue
        yield _station_parse(line, fields, layout)


def _station_parse(line: int, fields: list[str], layout: Layout) -> Station | Rejected | Empty:
    numeric = [fields[i].strip() for i in layout.fields] + [fields[i].strip() for i, _ in layout.options]
    if not any(numeric):
        return Empty(line)
    values = []
    labels = [*FIELDS, *(name for _, name in layout.options)]
    for label, text in zip(labels, numeric, strict=True):
        if not text:
            return Rejected(line, f"{label}: empty, while other results of the row are given")
        if not (text.isascii() and text.isdigit()):
            return Rejected(line, f"{printable(label)}: '{printable(text)}' is not a whole number of 0 or more")
        value = int(text)
        if value > COUNT_MAX:
            return Rejected(line, f"{printable(label)}: {value} is larger than {COUNT_MAX}")
        values.append(value)
    counts, votes = tuple(values[: len(FIELDS)]), tuple(values[len(FIELDS) :])
    if not any(counts) and not any(votes):
        return Empty(line)  # nobody registered, nothing issued or cast: a station that never opened
    if counts[0] == 0:
        return Rejected(line, "registered_voters: 0 while ballots or votes are reported")
    if sum(votes) > counts[4]:
        return Rejected(line, f"votes for the options ({sum(votes)}) exceed the valid ballots ({counts[4]})")
    identity = {name: fields[i] for name, i in layout.identity.items()}
    if layout.file_format == "plain":
        code = identity["code"].strip()
        name = (identity.get("name") or "").strip() or code
        if not code:
            return Rejected(line, "code: empty")
        if len(code) > CODE_MAX_LENGTH:
            return Rejected(line, f"code: at most {CODE_MAX_LENGTH} characters")
    else:
        parts = {k: identity.get(k, "") for k in ("region", "tik", "uik", "oik")}
        if not parts["region"].strip():
            return Rejected(line, "region: empty")
        if not parts["uik"].strip() and not parts["oik"].strip():
            return Rejected(line, "uik: empty, and no oik tells this remote e-voting row apart")
        code, name = station_code(**parts), station_name(**parts)
    for label, text in (("code", code), ("name", name)):
        if "\x00" in text:
            return Rejected(line, f"{label}: NUL characters are not allowed")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return Rejected(line, f"{label}: not valid UTF-8 ({printable(text)})")
    return Station(line, code, name[:NAME_MAX_LENGTH], counts, votes)
