import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from election_monitor.commands import sql_log_off
from elections.models import Election
from elections.services import ElectionCertified
from protocols.importers import ImportFileError
from protocols.layouts import FORMATS
from protocols.services import DEFAULT_BATCH_SIZE, protocols_import


class Command(BaseCommand):
    help = (
        "Import an election's per-station protocols (SPEC section 11), replacing any imported before. "
        "Reads the commission's CSV as published (region,tik,uik[,oik] then the protocol lines by their "
        "Russian text, then one column per option: the kobak_*.csv files of every year) or the plain "
        "layout (code[,name],registered_voters,ballots_early,ballots_on_day,ballots_outside,valid,invalid, "
        "then one column per option; see docs/FORENSICS.md), optionally gzipped. Missing constituencies are "
        "created with the protocol's registered voters. Each rejected line is reported on stderr with its "
        "number and reason; rows with empty results are skipped and counted. Exit status 0 when the file was "
        "processed; with --strict, 1 if any line was rejected (the valid lines are stored all the same)."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--election", required=True, help="Code of the election the protocols belong to.")
        parser.add_argument("--format", choices=FORMATS, help="commission or plain; by default from the header.")
        parser.add_argument(
            "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="Stations stored per bulk insert."
        )
        parser.add_argument("--strict", action="store_true", help="Exit with status 1 if any line was rejected.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

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
            desc="importing protocols",
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
                report = protocols_import(
                    path=options["file"],
                    election=election,
                    file_format=options["format"],
                    on_rejected=on_rejected,
                    on_progress=on_progress,
                    batch_size=options["batch_size"],
                )
        except (ImportFileError, ElectionCertified) as error:
            raise CommandError(
                f"{error} Nothing was changed." if isinstance(error, ElectionCertified) else str(error)
            ) from None
        finally:
            bar.close()
        if report.ignored_columns:
            self.stdout.write(f"Protocol lines not stored: {' | '.join(report.ignored_columns)}")
        self.stdout.write(f"Options ({len(report.options)}): {' | '.join(report.options)}")
        self.stdout.write(
            f"{options['file']} into {election.code} ({report.file_format} layout): read {report.read}, "
            f"stored {report.stored}, skipped empty {report.skipped_empty}, rejected {report.rejected}, "
            f"constituencies created {report.constituencies_created}"
        )
        if report.rejected and options["strict"]:
            raise CommandError(f"{report.rejected} line(s) rejected (the valid lines were stored).")
