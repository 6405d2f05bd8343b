from datetime import timedelta

import factory

from elections.tests.factories import ConstituencyFactory
from metrics.models import Anomaly, AnomalyKind, HourlyStats


class HourlyStatsFactory(factory.django.DjangoModelFactory):
    """Rows written by hand, for read-side tests; the product only writes them by recompute."""

    class Meta:
        model = HourlyStats

    constituency = factory.SubFactory(ConstituencyFactory)
    election = factory.LazyAttribute(lambda o: o.constituency.election)
    bulletins_issued = 10
    votes_cast = 8
    transaction_count = 18

    @factory.lazy_attribute_sequence
    def hour(self, n):
        return self.constituency.election.starts_at + timedelta(hours=n)


class AnomalyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Anomaly

    constituency = factory.SubFactory(ConstituencyFactory)
    election = factory.LazyAttribute(lambda o: o.constituency.election)
    kind = AnomalyKind.OUTSIDE_VOTING_WINDOW
    weight = 1.0
    details = factory.LazyFunction(dict)

    @factory.lazy_attribute_sequence
    def hour(self, n):
        return self.constituency.election.starts_at + timedelta(hours=n)
