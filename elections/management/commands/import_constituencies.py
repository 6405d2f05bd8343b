from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from election_monitor.exceptions import ServiceError
from elections.importers import ImportFileError, constituencies_import
from elections.models import Election


class Command(BaseCommand):
    help = (
        "Create or update an election's constituencies from a CSV file with the header "
        "code,name,registered_voters (optionally gzipped). Existing codes are updated (name, registered "
        "voters; a changed number of registered voters recomputes that constituency's rates). Each rejected "
        "line is reported on stderr with its line number and reason, and the valid lines are stored. Exit "
        "status 0 when the file was processed; with --strict, 1 if any line was rejected."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--election", required=True, help="Code of the election the constituencies belong to.")
        parser.add_argument("--strict", action="store_true", help="Exit with status 1 if any line was rejected.")

    def handle(self, *args, **options):
        try:
            election = Election.objects.get(code=options["election"])
        except Election.DoesNotExist:
            raise CommandError(f"No election with code '{options['election']}'.") from None
        try:
            report = constituencies_import(
                path=options["file"],
                election=election,
                on_rejected=lambda line, reason: self.stderr.write(f"line {line}: {reason}"),
            )
        except (ImportFileError, ServiceError) as error:
            raise CommandError(str(error)) from None
        if report.ignored_columns:
            self.stdout.write(f"Ignored unknown column(s): {', '.join(report.ignored_columns)}")
        self.stdout.write(
            f"{options['file']} into {election.code}: read {report.read}, created {report.created}, "
            f"updated {report.updated}, unchanged {report.unchanged}, rejected {report.rejected}"
        )
        if report.rejected and options["strict"]:
            raise CommandError(f"{report.rejected} line(s) rejected (the valid lines were stored).")
