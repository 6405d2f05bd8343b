"""How a protocol file's columns map to protocol fields (SPEC section 11, docs/FORENSICS.md).

Two layouts:

- **commission**: the per-station CSV as the Russian Central Election Commission's data is
  republished (the ``kobak_*.csv`` files): identity columns ``region``, ``tik``, ``uik`` (and
  optionally ``oik``, ``level``), then the protocol lines named by their Russian text, whose
  wording differs between years, then one column per option. Protocol lines are matched by the
  words they must contain; every column after the last protocol line is an option.
- **plain**: a documented English header for any other country: ``code``, optional ``name``,
  ``registered_voters``, ``ballots_early``, ``ballots_on_day``, ``ballots_outside``, ``valid``,
  ``invalid``, and every other column is an option, in file order.
"""

from dataclasses import dataclass

# The numeric fields of a protocol, in storage order.
FIELDS = ("registered_voters", "ballots_early", "ballots_on_day", "ballots_outside", "valid", "invalid")

FIELD_LABELS = {
    "registered_voters": "registered voters (Число избирателей, включенных/внесенных в список ...)",
    "ballots_early": "ballots issued early (... бюллетеней, выданных ... досрочно)",
    "ballots_on_day": "ballots issued in the premises (... бюллетеней, выданных ... в помещении ...)",
    "ballots_outside": "ballots issued outside the premises (... бюллетеней, выданных ... вне помещения ...)",
    "valid": "valid ballots (Число действительных избирательных бюллетеней)",
    "invalid": "invalid ballots (Число недействительных избирательных бюллетеней)",
}

# Each field: alternatives, each a tuple of fragments that must all occur in the normalised
# column text. Wordings seen: 2011 "внесенных в список", 2012-2024 "включенных в список",
# 2021 "... на момент окончания голосования", 2012+ "выданных в помещении ... в день голосования".
PROTOCOL_LINE_PATTERNS = {
    "registered_voters": (
        ("число избирателей", "в список"),
        ("число участников голосования", "в список"),
    ),
    "ballots_early": (("бюллетеней", "выданных", "досрочно"),),
    "ballots_on_day": (("бюллетеней", "выданных", "в помещении"),),
    "ballots_outside": (("бюллетеней", "выданных", "вне помещения"),),
    "valid": (("число действительных",),),
    "invalid": (("число недействительных",),),
}
PROTOCOL_LINE_PREFIX = "число "  # every line of a Russian protocol starts "Число ..." ("Number of ...")
COMMISSION_IDENTITY = ("region", "tik", "uik")
COMMISSION_OPTIONAL_IDENTITY = ("oik", "level")
PLAIN_IDENTITY = ("code",)
PLAIN_OPTIONAL_IDENTITY = ("name",)
FORMATS = ("commission", "plain")


class LayoutError(ValueError):
    """The header cannot be read as a protocol file; the message names what is missing."""


@dataclass(frozen=True)
class Layout:
    file_format: str
    identity: dict[str, int]  # identity column -> index
    fields: tuple[int, ...]  # index of each of FIELDS
    options: tuple[tuple[int, str], ...]  # (index, option name), in file order
    ignored: tuple[str, ...]  # protocol lines and other columns that are not stored
    width: int


def normalise(text: str) -> str:
    return " ".join(text.replace("\ufeff", "").replace("ё", "е").replace("Ё", "Е").split()).lower()


def layout_detect(header: list[str], file_format: str | None = None) -> Layout:
    """Read a header; raise LayoutError naming the columns that could not be matched."""
    names = [normalise(h) for h in header]
    if file_format is None:
        file_format = "plain" if "code" in names and "registered_voters" in names else "commission"
    if file_format == "plain":
        return _plain_layout(header, names)
    return _commission_layout(header, names)


def _plain_layout(header: list[str], names: list[str]) -> Layout:
    missing = [c for c in (*PLAIN_IDENTITY, *FIELDS) if c not in names]
    if missing:
        raise LayoutError(
            f"The plain protocol header lacks column(s) {', '.join(missing)}: expected code[,name],"
            f"{','.join(FIELDS)} followed by one column per option; got {','.join(header)}. Nothing was stored."
        )
    _no_repeats(names)
    known = {*PLAIN_IDENTITY, *PLAIN_OPTIONAL_IDENTITY, *FIELDS}
    identity = {c: names.index(c) for c in (*PLAIN_IDENTITY, *PLAIN_OPTIONAL_IDENTITY) if c in names}
    options = tuple((i, header[i].strip()) for i, name in enumerate(names) if name not in known)
    if not options:
        raise LayoutError("The plain protocol header names no option columns. Nothing was stored.")
    return Layout("plain", identity, tuple(names.index(f) for f in FIELDS), options, (), len(header))


def _commission_layout(header: list[str], names: list[str]) -> Layout:
    missing_identity = [c for c in COMMISSION_IDENTITY if c not in names]
    protocol_lines = [i for i, name in enumerate(names) if name.startswith(PROTOCOL_LINE_PREFIX)]
    matched: dict[str, list[int]] = {field: [] for field in FIELDS}
    for i in protocol_lines:
        for field, alternatives in PROTOCOL_LINE_PATTERNS.items():
            if any(all(fragment in names[i] for fragment in fragments) for fragments in alternatives):
                matched[field].append(i)
    unmatched_fields = [f for f, found in matched.items() if not found]
    ambiguous = {f: found for f, found in matched.items() if len(found) > 1}
    if missing_identity or unmatched_fields or ambiguous or not protocol_lines:
        problems = []
        if missing_identity:
            problems.append(f"no identity column(s) {', '.join(missing_identity)}")
        if unmatched_fields:
            problems.append(
                "no column matched the protocol line(s): " + "; ".join(FIELD_LABELS[f] for f in unmatched_fields)
            )
        for field, found in ambiguous.items():
            problems.append(f"{FIELD_LABELS[field]} matched several columns: {' | '.join(header[i] for i in found)}")
        unused = [header[i] for i in protocol_lines if not any(i in found for found in matched.values())]
        seen = f" The protocol lines it could not match: {' | '.join(unused)}." if unused else ""
        raise LayoutError(
            f"Cannot read the header as a commission protocol file: {'; '.join(problems)}.{seen} Nothing was stored."
        )
    _no_repeats(names)
    last_line = max(protocol_lines)
    options = tuple((i, header[i].strip()) for i in range(last_line + 1, len(header)))
    if not options:
        raise LayoutError("The header names no option columns after the protocol lines. Nothing was stored.")
    identity = {c: names.index(c) for c in (*COMMISSION_IDENTITY, *COMMISSION_OPTIONAL_IDENTITY) if c in names}
    used = {*identity.values(), *(found[0] for found in matched.values())}
    ignored = tuple(header[i].strip() for i in range(last_line + 1) if i not in used)
    fields = tuple(matched[f][0] for f in FIELDS)
    return Layout("commission", identity, fields, options, ignored, len(header))


def _no_repeats(names: list[str]) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise LayoutError(f"The header names column(s) {', '.join(repeated)} more than once. Nothing was stored.")
