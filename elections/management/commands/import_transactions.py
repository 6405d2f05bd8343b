import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from election_monitor.commands import sql_log_off
from election_monitor.exceptions import ServiceError
from elections.importers import DEFAULT_BATCH_SIZE, FORMATS, ImportFileError, transactions_import
from elections.models import Election


class Command(BaseCommand):
    help = (
        "Import transactions from a CSV file (header tx_hash,constituency,kind,timestamp and optionally "
        "block_number; constituency is the constituency's code) or a JSON Lines file with the same keys, "
        "optionally gzipped. Streams in batches with flat memory; a tx_hash already stored or repeated in "
        "the file is counted as a duplicate, so re-running an import is safe. Each rejected line is reported "
        "on stderr with its line number and reason, and every valid line is kept. Exit status: 0 when the "
        "file was processed, even with rejected lines (they are reported and counted); with --strict, 1 if "
        "any line was rejected (the valid lines are stored all the same: fix the reported lines and re-run). "
        "An unknown election, a missing file or a header without a required column stops the import before "
        "anything is stored. Metrics are brought up to date by one flush requested at the end."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--election", required=True, help="Code of the election the transactions belong to.")
        parser.add_argument(
            "--format",
            choices=FORMATS,
            help="csv or jsonl; by default taken from the extension (.csv, .jsonl, .ndjson, .gz).",
        )
        parser.add_argument(
            "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="Lines per database transaction."
        )
        parser.add_argument("--strict", action="store_true", help="Exit with status 1 if any line was rejected.")
        parser.add_argument(
            "--no-progress",
            action="store_true",
            help="No progress bar (it is off anyway when stderr is not a terminal).",
        )

    def handle(self, *args, **options):
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            election = Election.objects.get(code=options["election"])
        except Election.DoesNotExist:
            raise CommandError(f"No election with code '{options['election']}'.") from None

        bar = tqdm(
            total=0,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            desc="importing",
            disable=True if options["no_progress"] else None,
        )

        def on_rejected(line: int, reason: str) -> None:
            with tqdm.external_write_mode(file=sys.stderr):
                self.stderr.write(f"line {line}: {reason}")

        def on_progress(position: int, size: int) -> None:
            bar.total = size
            bar.update(position - bar.n)

        try:
            with sql_log_off():
                report = transactions_import(
                    path=options["file"],
                    election=election,
                    fmt=options["format"],
                    batch_size=options["batch_size"],
                    on_rejected=on_rejected,
                    on_progress=on_progress,
                )
        except (ImportFileError, ServiceError) as error:
            raise CommandError(str(error)) from None
        finally:
            bar.close()

        if report.ignored_columns:
            self.stdout.write(f"Ignored unknown column(s): {', '.join(report.ignored_columns)}")
        self.stdout.write(f"{options['file']} into {election.code}: {report.summary()}")
        if (report.rejected or report.conflicts) and options["strict"]:
            raise CommandError(
                f"{report.rejected} line(s) rejected and {report.conflicts} in conflict (the valid lines were stored)."
            )
