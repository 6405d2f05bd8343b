"""Episodes: maximal runs of one constituency's flagged hours of one kind, and
the events alerts deliver when one opens, closes or is withdrawn (docs/METRICS.md#episodes).

Episodes are re-derived from the stored Anomaly and HourlyStats rows inside the recompute
that changed them, under its election lock, and written with their events in the same
database transaction. How merges, splits and corrections map to events: docs/METRICS.md#episode-events.
"""

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from election_monitor import bulk_sql
from metrics import anomalies
from metrics.events import episode_events_announce
from metrics.models import Anomaly, Episode, EpisodeEvent, EpisodeEventKind, HourlyStats

# Past this many distinct windows, one filter from the earliest of them is cheaper than an OR
# of one clause per window; past IN_LIST_MAX ids, the election's index beats an IN list.
WINDOW_CLAUSES_MAX = 20
IN_LIST_MAX = 200
EPISODE_FIELDS = ("last_hour", "hours", "peak", "open", "weight")


@dataclass(slots=True, eq=False)
class StoredEpisode:
    """A stored episode's row, without a model instance: a busy flush reads hundreds, and
    building model instances was most of the upkeep's time (docs/PERFORMANCE.md)."""

    id: int
    election_id: int
    constituency_id: int
    kind: str
    first_hour: datetime
    last_hour: datetime
    hours: int
    peak: float | None
    open: bool
    weight: float
    updated_at: datetime | None = None


STORED_COLUMNS = (
    "id",
    "election_id",
    "constituency_id",
    "kind",
    "first_hour",
    "last_hour",
    "hours",
    "peak",
    "open",
    "weight",
)


@dataclass(slots=True)
class DerivedEpisode:
    kind: str
    first_hour: datetime
    last_hour: datetime
    hours: int
    peak: float | None
    open: bool
    weight: float


def episodes_derive(
    hours: list[datetime], flagged: dict[datetime, float | None], *, kind: str, weight: float
) -> list[DerivedEpisode]:
    """The episodes of one kind in one constituency: ``hours`` are its hours with data in
    order, ``flagged`` maps each flagged hour to its magnitude (None where undefined)."""
    found: list[DerivedEpisode] = []
    current = None
    for h in hours:
        if h not in flagged:
            current = None
            continue
        m = flagged[h]
        if current is None:
            current = DerivedEpisode(kind, h, h, 0, None, False, weight)
            found.append(current)
        current.last_hour = h
        current.hours += 1
        if m is not None and (current.peak is None or m > current.peak):
            current.peak = m
    if found and hours and found[-1].last_hour == hours[-1]:
        found[-1].open = True
    return found


def episodes_refresh(
    *,
    election_id: int,
    constituency_ids: Iterable[int] | None,
    since: datetime | None = None,
    now: datetime,
    magnitude_changes: dict[int, list[tuple[datetime, str, dict, dict]]] | None = None,
    election_hours: Mapping[int, Iterable[datetime]] | None = None,
) -> list[EpisodeEvent]:
    """Bring the stored episodes of the given constituencies (None: every one) in line with
    their anomalies and hours, and record an event for each episode that opened, closed or
    disappeared; returns the events, announced once the transaction commits.

    ``since``: no flag and no hour with data before it changed (None: any may have). Only
    what can change is re-derived: per constituency and kind, from the first hour of the
    last stored episode that ends before ``since``, or of the one that reaches it.
    Subtle: an episode ending earlier is followed by an unflagged hour before ``since`` and
    by a later episode of its kind, so neither its extent nor its ``open`` can move.

    ``magnitude_changes``: constituencies whose only change is the details of flags that
    stay, as (hour, kind, old details, new details). Their episodes keep their extent, so
    only a ``peak`` can move, and it is worked out from the stored one without reading
    hours or anomalies, unless the hour that held the peak went down.

    ``election_hours``: with ``constituency_ids`` None, every constituency's hours with data
    as just written, when the caller holds them (a whole-election recompute): reading back
    an election's hourly rows was a third of a full recompute (docs/PERFORMANCE.md).
    """
    ids = None if constituency_ids is None else set(constituency_ids)
    quick = {c: changes for c, changes in (magnitude_changes or {}).items() if ids is not None and c not in ids}
    if ids is not None and not ids and not quick:
        return []
    if ids is None:
        since = None
    stored_rows = Episode.objects.filter(election_id=election_id)
    if ids is not None:
        stored_rows = stored_rows.filter(bulk_sql.ids_in(sorted(ids | quick.keys())))
    stored: dict[int, dict[str, list[StoredEpisode]]] = defaultdict(lambda: defaultdict(list))
    for row in stored_rows.order_by("first_hour").values_list(*STORED_COLUMNS):
        episode = StoredEpisode(*row)
        stored[episode.constituency_id][episode.kind].append(episode)

    updated: list[StoredEpisode] = []
    for c, changes in quick.items():
        peaks = _peaks_moved(stored[c], changes)
        if peaks is None:
            ids.add(c)  # the peak may have come down: re-derive this constituency
            continue
        for episode, peak in peaks.items():
            episode.peak, episode.updated_at = peak, now
            updated.append(episode)
        del stored[c]  # done: not re-derived below
    ids = None if ids is None else sorted(ids)
    wanted = None if ids is None else set(ids)

    # Where each (constituency, kind) is re-derived from, and each constituency's earliest.
    kind_window: dict[tuple[int, str], datetime | None] = {}
    window: dict[int, datetime | None] = dict.fromkeys(ids or (), since)
    for c, by_kind in stored.items():
        for kind, episodes in by_kind.items():
            start = None
            if since is not None:
                last_before = [e for e in episodes if e.last_hour < since][-1:]
                reaching = [e for e in episodes if e.last_hour >= since][:1]
                start = min([since, *(e.first_hour for e in last_before + reaching)])
                window[c] = min(window[c], start)
            kind_window[(c, kind)] = start

    flagged: dict[int, dict[str, dict[datetime, float | None]]] = defaultdict(lambda: defaultdict(dict))
    every = ids is None  # the whole election: every row, no windows
    anomaly_fields = ("constituency_id", "hour", "kind", "details")
    for c, h, kind, details in _rows_in_windows(Anomaly, anomaly_fields, election_id, None if every else window):
        if wanted is not None and c not in wanted:
            continue
        start = kind_window.get((c, kind), window.get(c))
        if start is None or h >= start:
            if isinstance(details, str):  # a raw read leaves decoding JSON to the caller
                details = json.loads(details)
            flagged[c][kind][h] = anomalies.magnitude(kind, details)
    # Only a constituency with a flag or a stored episode in its window can have an episode
    # to write: most of a flush's constituencies have neither, and their hours are not read.
    relevant = sorted(flagged.keys() | stored.keys())
    if not relevant and not updated:
        return []
    hours: dict[int, set[datetime]] = defaultdict(set)
    if every and election_hours is not None:
        hours.update((c, set(election_hours.get(c, ()))) for c in relevant)
    else:
        # Only the relevant constituencies' hours: for a whole election, the few with a flag
        # or an episode, not every hourly row (docs/PERFORMANCE.md, "Spread over workers").
        for c, h in _rows_in_windows(
            HourlyStats, ("constituency_id", "hour"), election_id, {c: window.get(c) for c in relevant}
        ):
            hours[c].add(h)

    deleted: list[StoredEpisode] = []
    created: list[Episode] = []
    pending: list[tuple[str, Episode, dict | None]] = []
    for c in relevant:
        start_c = window.get(c)
        # A flagged hour always counts as an hour with data, even should its row be missing.
        series = sorted({h for h in hours[c] if start_c is None or h >= start_c}.union(*flagged[c].values()))
        for kind in sorted(stored[c].keys() | flagged[c].keys()):
            start = kind_window.get((c, kind), start_c)
            in_window = series if start is None else [h for h in series if h >= start]
            derived = {
                d.first_hour: d
                for d in episodes_derive(in_window, flagged[c][kind], kind=kind, weight=anomalies.weight(kind))
            }
            before = {e.first_hour: e for e in stored[c][kind] if start is None or e.first_hour >= start}
            for first_hour, episode in before.items():
                if first_hour not in derived:
                    deleted.append(episode)
                    # Taken now: the row goes, the event keeps what it was.
                    pending.append((EpisodeEventKind.WITHDRAWN, episode, _payload(episode)))
            for first_hour, d in derived.items():
                episode = before.get(first_hour)
                if episode is None:
                    episode = Episode(
                        election_id=election_id, constituency_id=c, kind=kind, first_hour=first_hour, updated_at=now
                    )
                    _assign(episode, d)
                    created.append(episode)
                    pending.append((EpisodeEventKind.OPENED, episode, None))
                    if not d.open:
                        pending.append((EpisodeEventKind.CLOSED, episode, None))
                    continue
                was_open = episode.open
                if any(getattr(episode, name) != getattr(d, name) for name in EPISODE_FIELDS):
                    _assign(episode, d)
                    episode.updated_at = now
                    updated.append(episode)
                if was_open != d.open:
                    pending.append((EpisodeEventKind.OPENED if d.open else EpisodeEventKind.CLOSED, episode, None))

    if deleted:
        Episode.objects.filter(id__in=[e.id for e in deleted]).delete()
    if updated:
        # Subtle: an open cumulative episode's peak moves at nearly every flush, so a busy
        # flush updates hundreds of episodes; rows_update is linear where bulk_update's CASE
        # per row is quadratic (docs/PERFORMANCE.md).
        fields = [*EPISODE_FIELDS, "updated_at"]
        bulk_sql.rows_update(Episode, fields, [(e.id, *(getattr(e, name) for name in fields)) for e in updated])
    if created:
        Episode.objects.bulk_create(created)
    events = [
        EpisodeEvent(
            election_id=election_id,
            constituency_id=episode.constituency_id,
            kind=episode.kind,
            first_hour=episode.first_hour,
            event=event,
            payload=payload or _payload(episode),
            created_at=now,
        )
        for event, episode, payload in pending
    ]
    if events:
        events = EpisodeEvent.objects.bulk_create(events)
        episode_events_announce(election_id=election_id, event_ids=[e.id for e in events])
    return events


def _peaks_moved(
    stored: dict[str, list[StoredEpisode]], changes: list[tuple[datetime, str, dict, dict]]
) -> dict[StoredEpisode, float | None] | None:
    """New peaks of the episodes holding the changed hours, or None when one cannot be known
    without reading the episode's hours: the hour that held its peak went down."""
    peaks: dict[int, tuple[StoredEpisode, float | None]] = {}
    for hour, kind, old_details, new_details in changes:
        episode = next((e for e in stored.get(kind, ()) if e.first_hour <= hour <= e.last_hour), None)
        if episode is None:
            return None
        peak = peaks.get(episode.id, (episode, episode.peak))[1]
        old, new = anomalies.magnitude(kind, old_details), anomalies.magnitude(kind, new_details)
        if new is not None and (peak is None or new > peak):
            peak = new
        elif old is not None and old == peak and (new is None or new < old):
            return None
        peaks[episode.id] = (episode, peak)
    return {episode: peak for episode, peak in peaks.values() if peak != episode.peak}


def _rows_in_windows(model, fields, election_id: int, window: dict[int, datetime | None] | None) -> list[tuple]:
    """``fields`` of the election's rows (Anomaly or HourlyStats) in each constituency's window;
    ``window`` None: every row of the election. May return more: callers filter again."""
    if window is None:
        return list(model.objects.filter(election_id=election_id).values_list(*fields).order_by())
    return bulk_sql.rows_from_starts(
        model,
        fields,
        window,
        where={"election_id": election_id},
        clauses_max=WINDOW_CLAUSES_MAX,
        in_list_max=IN_LIST_MAX,
    )


def _assign(episode: Episode | StoredEpisode, derived: DerivedEpisode) -> None:
    for name in EPISODE_FIELDS:
        setattr(episode, name, getattr(derived, name))


def _payload(episode: Episode | StoredEpisode) -> dict:
    """The episode's fields as the API shows them (times in UTC, ISO 8601)."""
    return {
        "id": episode.id,
        "election_id": episode.election_id,
        "constituency_id": episode.constituency_id,
        "kind": episode.kind,
        "first_hour": _iso(episode.first_hour),
        "last_hour": _iso(episode.last_hour),
        "hours": episode.hours,
        "peak": episode.peak,
        "open": episode.open,
        "weight": episode.weight,
    }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
