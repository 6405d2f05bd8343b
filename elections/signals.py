"""The one signal of the write path (see elections/services.py).

``buckets_changed`` is sent inside the database transaction that changed observed data,
with ``election_id`` and ``buckets``: a set of (constituency_id, hour) pairs, where hour
EVERY_HOUR (None) means every hour of that constituency and WHOLE_ELECTION the whole
election. An empty set says that no count can have moved but what the election's figures
show did (a new name, a certification): they are to be read again, not recounted. A saved
Transaction announces itself through ``post_save`` instead (bulk paths send no
``post_save``). The metrics app listens; this app never learns who does.
"""

from django.dispatch import Signal

EVERY_HOUR = None
WHOLE_ELECTION = (None, None)

buckets_changed = Signal()
