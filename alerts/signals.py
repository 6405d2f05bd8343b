"""Signal receivers: the thin doors from what metrics announces into alerts.services.

Both signals are sent after the commit that recorded their data. If a receiver fails or the
process dies first, nothing is lost for episode events (the recovery job dispatches them,
README "Alerts"); a drift repair stays recorded as a DriftCheck, visible in the admin.
"""

from django.dispatch import receiver

from alerts.notify import alert_send
from alerts.services import episode_events_dispatch
from alerts.tasks import deliveries_queue_on_commit
from metrics.events import drift_repaired, episode_events_recorded
from metrics.models import DriftCheck


@receiver(episode_events_recorded)
def dispatch_recorded_events(sender, *, election_id, event_ids, **kwargs):
    deliveries_queue_on_commit(episode_events_dispatch(event_ids=event_ids))


@receiver(drift_repaired)
def alert_drift_repaired(sender, *, election_id, drift_check_id, **kwargs):
    check = DriftCheck.objects.select_related("election").get(pk=drift_check_id)
    alert_send(
        election_id=election_id,
        subject=(
            f"Verification repaired {check.repaired_buckets} hourly buckets and "
            f"{check.repaired_constituencies} constituency totals"
        ),
        body={
            "drift_check_id": check.id,
            "election_code": check.election.code,
            "checked_at": check.checked_at,
            "repaired_buckets": check.repaired_buckets,
            "repaired_constituencies": check.repaired_constituencies,
            "details": check.details,
        },
    )
