"""Signal receivers: the thin door from recorded episode events into alerts.services."""

from django.dispatch import receiver

from alerts.services import episode_events_dispatch
from metrics.events import episode_events_recorded


@receiver(episode_events_recorded)
def dispatch_recorded_events(sender, *, election_id, event_ids, **kwargs):
    """Sent after the commit that recorded the events. If this fails or the process dies
    first, the recovery job dispatches them (README, "Alerts")."""
    episode_events_dispatch(event_ids=event_ids)
