"""Plumbing shared by the bulk management commands of every app."""

from contextlib import contextmanager

from django.conf import settings


@contextmanager
def sql_log_off():
    """Run a bulk load without DEBUG's SQL log.

    With DEBUG on (the embedded default) Django keeps every statement with its parameters
    rendered into text, and on SQLite rendering costs one extra query per 999 parameters: for
    a load of hundreds of thousands of rows that is a large share of the time and tens of MB
    of memory, for a log nobody reads. Commands run in their own process, so switching the
    setting for the duration of the load touches nothing else.
    """
    previous = settings.DEBUG
    settings.DEBUG = False
    try:
        yield
    finally:
        settings.DEBUG = previous
