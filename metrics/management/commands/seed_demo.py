from django.core.management.base import BaseCommand, CommandError

from election_monitor.commands import sql_log_off
from metrics import demo


class Command(BaseCommand):
    help = (
        "Load a realistic demo election (3 days of voting in Moscow time, a daily turnout curve, bulletins "
        "before votes, a few injected anomalies) and compute all its metrics. Deterministic for a given --seed. "
        "Safe to re-run: if the election exists it is left as it is, unless --reset deletes and recreates it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--code", default=demo.DEFAULT_CODE, help=f"Election code (default {demo.DEFAULT_CODE}).")
        parser.add_argument(
            "--constituencies",
            type=int,
            default=demo.DEFAULT_CONSTITUENCIES,
            help=f"Number of constituencies (default {demo.DEFAULT_CONSTITUENCIES}, at least {demo.MIN_CONSTITUENCIES}).",
        )
        parser.add_argument(
            "--transactions",
            type=int,
            default=demo.DEFAULT_TRANSACTIONS,
            help=f"About how many transactions (default {demo.DEFAULT_TRANSACTIONS:,}).",
        )
        parser.add_argument("--seed", type=int, default=demo.DEFAULT_SEED, help="Random seed (same seed, same data).")
        parser.add_argument(
            "--reset", action="store_true", help="Delete the election with this code first, then recreate it."
        )

    def handle(self, *args, **options):
        try:
            with sql_log_off():
                report = demo.demo_election_seed(
                    code=options["code"],
                    constituencies=options["constituencies"],
                    transactions=options["transactions"],
                    seed=options["seed"],
                    reset=options["reset"],
                )
        except demo.DemoError as error:
            raise CommandError(str(error)) from None
        if not report.created:
            self.stdout.write(
                f"Election {report.code} already exists (id {report.election_id}); nothing changed. "
                "Use --reset to recreate it."
            )
        else:
            self.stdout.write(
                f"Created election {report.code} (id {report.election_id}): loaded in {report.load_seconds:.1f} s, "
                f"metrics computed in {report.recompute_seconds:.1f} s."
            )
        self.stdout.write(
            f"  constituencies {report.constituencies}, registered voters {report.registered_voters:,}, "
            f"transactions {report.transactions:,}, votes {report.votes:,}, participation {report.participation_rate:.1f} %"
        )
        for kind in sorted(report.anomalies):
            where = ", ".join(report.flagged[kind])
            injected = f" (injected in {report.injected[kind]})" if kind in report.injected else ""
            self.stdout.write(f"  {kind}: {report.anomalies[kind]} anomalies in {where}{injected}")
