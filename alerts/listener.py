"""A small webhook receiver for demos and checks: verifies each alert's signature, dedupes by
delivery id and prints one line per POST (``manage.py alerts_listen``)."""

import http.server
import json
import threading
from collections.abc import Callable

from alerts.signing import DELIVERY_HEADER, SIGNATURE_HEADER, signature_verify

# Delivery ids remembered for deduplication (a demo's worth).
SEEN_MAX = 100_000


def alert_summary(payload: dict) -> str:
    """One line naming what an alert is about."""
    election = (payload.get("election") or {}).get("code", "all elections")
    if "event" in payload:
        event = payload["event"]
        episode = payload.get("episode") or {}
        return (
            f"{election} {event['constituency']['code']}: {event['kind']} episode {event['event']} "
            f"(first hour {event['first_hour']}, peak {episode.get('peak')})"
        )
    return f"{election}: {payload.get('message', {}).get('subject', '?')}"


def alert_listener_build(*, host: str, port: int, secret: str, write: Callable[[str], None]):
    """An HTTP server (not yet serving) that answers 200 to correctly signed POSTs, 401 to
    the others, and writes a line for each."""
    seen: set[str] = set()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, 1_000_000))
            delivery_id = self.headers.get(DELIVERY_HEADER, "")
            if not signature_verify(secret=secret, body=body, header=self.headers.get(SIGNATURE_HEADER)):
                write(
                    f"REJECTED (bad or missing signature) delivery {delivery_id or '?'} from {self.client_address[0]}"
                )
                self._answer(401)
                return
            with lock:
                duplicate = delivery_id in seen
                if not duplicate and len(seen) < SEEN_MAX:
                    seen.add(delivery_id)
            try:
                summary = alert_summary(json.loads(body))
            except (ValueError, KeyError, TypeError, AttributeError):
                summary = f"{len(body)} bytes, not an alert"
            marker = "duplicate, ignored" if duplicate else "verified"
            write(f"{self.log_date_time_string()} {marker} {delivery_id}: {summary}")
            self._answer(200)

        def _answer(self, status: int):
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    return http.server.ThreadingHTTPServer((host, port), Handler)
