"""How one attempt reaches a receiver: a signed webhook POST, or an e-mail.

Each function sends once and either returns (delivered) or raises ``DeliveryFailed`` saying
whether trying again can help. Retrying, recording and at-most-once live in alerts.services.
"""

import http.client
import smtplib
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMessage

from alerts.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, signature_compute

USER_AGENT = "ElectionMonitor-Alerts/1"
# Answers that say "later": the receiver is down, overloaded or timed out.
RETRYABLE_STATUSES = {408, 425, 429}


class DeliveryFailed(Exception):
    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the failure it is: following it would re-send a signed
    body to a URL nobody configured (or turn the POST into a GET)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def webhook_post(*, url: str, secret: str, body: bytes, delivery_id: str, event_type: str) -> int:
    """POST the body, signed; returns the receiver's 2xx status."""
    if urlsplit(url).scheme not in {"http", "https"}:
        raise DeliveryFailed(f"not an http(s) URL: {url!r}", retryable=False)
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature_compute(secret=secret, body=body),
            DELIVERY_HEADER: delivery_id,
            EVENT_HEADER: event_type,
        },
    )
    try:
        with _opener.open(request, timeout=settings.ALERTS_HTTP_TIMEOUT) as response:
            response.read(65536)
            return response.status
    except urllib.error.HTTPError as error:
        status = error.code
        error.close()
        retryable = status >= 500 or status in RETRYABLE_STATUSES
        raise DeliveryFailed(f"HTTP {status} {error.reason}", retryable=retryable) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        # Refused, reset, unreachable, timed out, a malformed answer: the network, not us.
        reason = getattr(error, "reason", None) or error
        raise DeliveryFailed(f"{type(error).__name__}: {reason}", retryable=True) from None


def email_send(*, recipients: list[str], subject: str, text: str, delivery_id: str, event_type: str) -> None:
    """One e-mail to the channel's recipients through Django's configured backend."""
    message = EmailMessage(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
        headers={
            # Mail clients treat messages with one Message-ID as one: a resend after a lost
            # record shows once in the inbox.
            "Message-ID": f"<{delivery_id}@election-monitor>",
            DELIVERY_HEADER: delivery_id,
            EVENT_HEADER: event_type,
        },
    )
    try:
        message.send(fail_silently=False)
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as error:
        raise DeliveryFailed(f"{type(error).__name__}: {error}", retryable=False) from None
    except (smtplib.SMTPException, OSError) as error:
        raise DeliveryFailed(f"{type(error).__name__}: {error}", retryable=True) from None
