"""Plumbing shared by the bulk management commands of every app."""

import sys
from contextlib import contextmanager

from django.conf import settings
from tqdm import tqdm


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


@contextmanager
def file_import_progress(command, *, desc: str, enabled: bool = True):
    """For a command that imports a file: a progress bar of the bytes read, on stderr, and a
    reporter of rejected lines that writes above the bar instead of through it. Yields
    ``(on_rejected(line, reason), on_progress(position, size))`` as the importers take them."""
    bar = tqdm(
        total=0,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        desc=desc,
        disable=None if enabled else True,
    )

    def on_rejected(line: int, reason: str) -> None:
        with tqdm.external_write_mode(file=sys.stderr):
            command.stderr.write(f"line {line}: {reason}")

    def on_progress(position: int, size: int) -> None:
        bar.total = size
        bar.update(position - bar.n)

    try:
        yield on_rejected, on_progress
    finally:
        bar.close()
