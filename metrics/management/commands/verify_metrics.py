from django.core.management.base import BaseCommand, CommandError

from elections.models import Election
from metrics.pipeline import settled_elections_verify


class Command(BaseCommand):
    help = (
        "Recount elections against their stored figures and repair what drifted (what the daily beat job does "
        "for every election that is not active). Prints one line per election; exit 0 whether or not it repaired."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--election",
            action="append",
            metavar="CODE",
            help="Verify this election (repeatable), active or not. Default: every election that is not active.",
        )

    def handle(self, *args, **options):
        ids = None
        if options["election"]:
            found = dict(Election.objects.filter(code__in=options["election"]).values_list("code", "id"))
            missing = sorted(set(options["election"]) - found.keys())
            if missing:
                raise CommandError(f"No election with code {', '.join(missing)}.")
            ids = list(found.values())
        checks = settled_elections_verify(election_ids=ids)
        for check in checks:
            verdict = (
                f"repaired {check.repaired_buckets} buckets and {check.repaired_constituencies} constituency totals"
                if check.drifted
                else "in agreement with its transactions"
            )
            self.stdout.write(f"election {check.election_id}: {verdict} (drift check {check.id})")
        if not checks:
            self.stdout.write("No election to verify.")
