"""The read side of forensics: each figure of SPEC section 11 for an election, cached under its
latest protocol import (forensics.cache), as JSON data or as a PNG picture."""

import numpy as np
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone

from elections.models import Election
from forensics import charts, figures
from forensics.cache import cached, figure_cacheable, figure_key
from protocols.models import ElectionOption, ProtocolImport, ProtocolResult

PROTOCOL_FIELDS = ("registered_voters", "ballots_early", "ballots_on_day", "ballots_outside", "valid", "invalid")


class NoProtocols(LookupError):
    """The election has no imported protocols."""


def latest_import(*, election_id: int) -> ProtocolImport:
    """The election's latest protocol import: its id versions every cached figure."""
    found = ProtocolImport.objects.filter(election_id=election_id).order_by("-id").first()
    if found is None:
        raise NoProtocols(f"No protocols have been imported for election {election_id}.")
    return found


def stations_load(*, election_id: int) -> figures.Stations:
    """Every protocol of the election as numpy columns, in one query.

    The votes lists come back as their JSON text and are parsed by numpy in one pass: decoding
    100,000 JSON lists into Python objects cost more than the figures themselves.
    """
    options = list(
        ElectionOption.objects.filter(election_id=election_id).order_by("position").values_list("name", flat=True)
    )
    rows = list(
        ProtocolResult.objects.filter(election_id=election_id)
        .order_by()
        .values_list(*PROTOCOL_FIELDS, Cast("votes", TextField()))
    )
    counts = np.array([row[:6] for row in rows], dtype=np.int64).reshape(-1, 6)
    text = ",".join(row[6].strip()[1:-1] for row in rows)
    votes = np.fromstring(text, dtype=np.int64, sep=",") if rows and options else np.zeros(0, dtype=np.int64)
    return figures.Stations.from_columns(counts, votes, options)


def _figure(election_id: int, name: str, compute, png=None, **params):
    """A figure's data (``png=None``) or its picture (``png``: data -> PNG bytes)."""
    record = latest_import(election_id=election_id)
    cacheable = figure_cacheable(name, **params)

    def data() -> dict:
        def fresh() -> dict:
            value = compute(stations_load(election_id=election_id))
            return {**value, "computed_at": timezone.now()}

        if not cacheable:
            return fresh()
        return cached(figure_key(election_id=election_id, import_id=record.id, figure=name, **params), fresh)

    if png is None:
        return data()
    if not cacheable:
        return png(data(), _title(election_id))
    key = figure_key(election_id=election_id, import_id=record.id, figure=name, representation="png", **params)
    return cached(key, lambda: png(data(), _title(election_id)))


def _title(election_id: int) -> str:
    election = Election.objects.filter(pk=election_id).only("code", "name").first()
    return f"{election.name} ({election.code})" if election else str(election_id)


def summary_get(*, election_id: int) -> dict:
    """Stations, registered voters, ballots, turnout and the leader's result; ``excluded`` holds
    the rows of the imported file that are not stations (empty results, rejected lines)."""
    record = latest_import(election_id=election_id)

    def compute(stations: figures.Stations) -> dict:
        excluded = {"empty results in the file": record.skipped_empty, "rejected lines of the file": record.rejected}
        return {"election_id": election_id, **figures.summary(stations), "excluded": excluded}

    return _figure(election_id, "summary", compute)


def histogram_get(*, election_id: int, of: str, bin_width: float, png: bool = False):
    return _figure(
        election_id,
        "histogram",
        lambda stations: figures.histogram(stations, of=of, bin_width=bin_width),
        png=charts.histogram_png if png else None,
        of=of,
        bin=bin_width,
    )


def fingerprint_get(*, election_id: int, bin_width: float, png: bool = False):
    return _figure(
        election_id,
        "fingerprint",
        lambda stations: figures.fingerprint(stations, bin_width=bin_width),
        png=charts.fingerprint_png if png else None,
        bin=bin_width,
    )


def integer_excess_get(*, election_id: int, reps: int, seed: int, png: bool = False):
    return _figure(
        election_id,
        "integer-excess",
        lambda stations: figures.integer_excess(stations, reps=reps, seed=seed).as_dict(),
        png=charts.integer_excess_png if png else None,
        reps=reps,
        seed=seed,
    )
