"""The alerts' beat schedule, rows of django-celery-beat's DatabaseScheduler created by a
migration (alerts/migrations/0002) like the metrics schedule (metrics/schedule.py)."""

SCHEDULE = [
    {
        "name": "alerts: recover deliveries",
        "task": "alerts.recover_deliveries",
        # Every 30 seconds: dispatches episode events whose dispatch died with its process,
        # and re-queues deliveries whose task was lost or whose worker died mid-attempt. An
        # alert is late by at most about a minute after such a fault; the job is a few index
        # probes when there is nothing to do.
        "every_seconds": 30,
        # A run that waited longer than its period is superseded by the next one.
        "expire_seconds": 25,
    },
]
