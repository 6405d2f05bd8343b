"""Answers for database failures outside the API, whose own exception handler already makes
them a JSON 503 (election_monitor.exceptions)."""

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from django.utils.html import escape
from django.utils.translation import gettext as _

from election_monitor.exceptions import DATABASE_RETRY_AFTER

logger = logging.getLogger(__name__)


class DatabaseUnavailableMiddleware:
    """A database lost mid-request (a restart, a failover, a terminated backend) answers the
    dashboard's and the admin's pages with 503 and Retry-After, as the API does, instead of a
    bare 500 (README, "Reliability"). The request's transaction was rolled back.

    The page is plain HTML without a template: the site's templates read the session and the
    user, that is the database that just failed."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.error("database unavailable during %s %s", request.method, request.path, exc_info=exception)
        title = escape(_("Temporarily unavailable"))
        message = escape(
            _(
                "The database became unavailable during this request, which was not completed. Try again in a few seconds."
            )
        )
        response = HttpResponse(
            '<!doctype html><html><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title></head>'
            f"<body><h1>{title}</h1><p>{message}</p></body></html>",
            status=503,
            content_type="text/html; charset=utf-8",
        )
        response["Retry-After"] = str(DATABASE_RETRY_AFTER)
        return response
