"""The beat schedule, one entry per job, each saying what runs and why that often.

Entries are rows of django-celery-beat's DatabaseScheduler, created by a migration
(metrics/migrations/0002) and visible and editable in the admin under "Periodic tasks".
"""

SCHEDULE = [
    {
        "name": "metrics: sweep active elections",
        "task": "metrics.sweep_active_elections",
        # Every 2 minutes: flushes marks whose task was lost (broker or worker down), repairs
        # buckets whose counts disagree with their transactions, and refreshes the current
        # hour's clock-dependent velocities. Short enough that an outage heals within minutes,
        # long enough that the count comparison over a large election stays a small load.
        "every_seconds": 120,
        # A sweep that waited longer than its period is superseded by the next one.
        "expire_seconds": 110,
    },
    {
        "name": "metrics: verify settled elections",
        "task": "metrics.verify_settled_elections",
        # Daily: recounts every election that is not active against its stored figures and
        # repairs what drifted (a bare QuerySet.update()/delete(), a hand edit, a lost flush
        # of late data). A full recount per election: cheap once a day, too much every
        # few minutes for elections nobody writes to.
        "every_seconds": 24 * 3600,
        "expire_seconds": 23 * 3600,
    },
]
