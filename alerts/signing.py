"""The webhook signature: what a sender puts in its headers and a receiver checks.

``X-Election-Monitor-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact request body
under the channel's secret; ``X-Election-Monitor-Delivery`` carries the delivery id, the same
on every attempt of one delivery, for receivers to dedupe on.
"""

import hashlib
import hmac

SIGNATURE_HEADER = "X-Election-Monitor-Signature"
DELIVERY_HEADER = "X-Election-Monitor-Delivery"
EVENT_HEADER = "X-Election-Monitor-Event"


def signature_compute(*, secret: str, body: bytes) -> str:
    """The header value: ``sha256=`` and the hex digest of the body under the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_verify(*, secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of a received header against the body."""
    return bool(header) and hmac.compare_digest(signature_compute(secret=secret, body=body), header)
