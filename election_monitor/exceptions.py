import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

logger = logging.getLogger(__name__)

# Seconds a client is asked to wait before resending after the database failed mid-request.
DATABASE_RETRY_AFTER = 5


class ServiceError(Exception):
    """A write a service refused for a reason the caller can show as it is (any app's
    services raise subclasses; the API answers with ``status`` and ``body()``)."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def body(self) -> dict:
        return {"detail": self.message}


def exception_handler(exc, context):
    """DRF's handler, plus model-level validation errors answered as 400 instead of 500, and
    an oversized body as a JSON 413 (Django's own answer is a bare HTML 400), and services'
    refusals (a certified election, a conflicting resend, a write out of scope) with their
    own status and message.

    A database connection lost mid-request (a restart, a failover, a terminated backend) is
    a JSON 503 with Retry-After rather than a bare 500. The request's transaction was rolled
    back (or, lost during COMMIT, has an outcome nobody here can know), and resending it is
    safe either way: a stored tx_hash is a duplicate, never a second row (README,
    "Reliability": the fault matrix checks both)."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.error("database unavailable during %s", _request_line(context), exc_info=exc)
        set_rollback()
        return Response(
            {
                "detail": "The database became unavailable during this request, which was not completed. "
                "Send it again: a transaction already stored counts as a duplicate, never twice."
            },
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    if isinstance(exc, ServiceError):
        return Response(exc.body(), status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"The request body is larger than the limit of {limit} bytes; send fewer items per request."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, TooManyFieldsSent):
        return Response({"detail": "Too many form fields in the request."}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = serializers.ValidationError(detail)
    return drf_exception_handler(exc, context)


def _request_line(context) -> str:
    request = context.get("request")
    return f"{request.method} {request.path}" if request is not None else "a request"
