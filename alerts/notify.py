"""What other code calls to raise an alert: a message through every matching channel,
delivered and recorded like episode events."""

from alerts.models import AlertMessage
from alerts.services import alert_message_create
from alerts.tasks import deliveries_queue_on_commit


def alert_send(*, election_id: int | None, subject: str, body: dict) -> AlertMessage:
    """Alert the election's channels and the global ones (only the global ones when
    ``election_id`` is None). Inside a transaction, nothing is sent unless it commits."""
    message, delivery_ids = alert_message_create(election_id=election_id, subject=subject, body=body)
    deliveries_queue_on_commit(delivery_ids)
    return message
