from datetime import UTC, datetime, timedelta

import factory

from elections.models import Constituency, Election, Transaction, TransactionKind

VOTING_STARTS = datetime(2024, 9, 6, 5, 0, tzinfo=UTC)


class ElectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Election

    code = factory.Sequence(lambda n: f"election-{n}")
    name = factory.Sequence(lambda n: f"Election {n}")
    timezone = "Europe/Moscow"
    starts_at = VOTING_STARTS
    ends_at = factory.LazyAttribute(lambda o: o.starts_at + timedelta(days=3) - timedelta(hours=9))


class ConstituencyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Constituency

    election = factory.SubFactory(ElectionFactory)
    code = factory.Sequence(lambda n: f"c{n:04d}")
    name = factory.Sequence(lambda n: f"Constituency {n}")
    registered_voters = 1000


class TransactionFactory(factory.django.DjangoModelFactory):
    """Goes through Transaction.save(), the ORM ingest path (derives ``hour``, marks dirty)."""

    class Meta:
        model = Transaction

    tx_hash = factory.Sequence(lambda n: f"0x{n:064x}")
    constituency = factory.SubFactory(ConstituencyFactory)
    election = factory.LazyAttribute(lambda o: o.constituency.election)
    kind = TransactionKind.VOTE_CAST
    timestamp = factory.LazyAttribute(lambda o: o.constituency.election.starts_at + timedelta(minutes=30))
