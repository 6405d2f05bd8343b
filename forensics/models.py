"""No tables of its own: forensics derives everything from protocols and the stream. The proxy
below gives the admin a page of the reconciliation (docs/FORENSICS.md, "Reconciliation")."""

from protocols.models import ProtocolResult


class Reconciliation(ProtocolResult):
    """A protocol seen next to its constituency's stream."""

    class Meta:
        proxy = True
        verbose_name = "reconciliation (stream against protocol)"
        verbose_name_plural = "reconciliation (stream against protocol)"
