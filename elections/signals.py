from django.dispatch import Signal

# Sent inside the database transaction that stored or changed transactions, with
# ``election_id``, ``buckets`` (a set of (constituency_id, hour) pairs; hour None means every
# hour of that constituency, constituency None the whole election) and ``defer_flush``
# (True while a long import is still running). The metrics app listens: this is the single
# seam through which every ingest path tells the metrics pipeline what changed.
buckets_changed = Signal()

# Sent inside the database transaction that added or renamed constituencies in bulk
# (bulk_create/bulk_update send no post_save), with ``election_id``: the election's figures
# computed on read (constituency count, registered voters) changed without any recompute.
constituencies_changed = Signal()
