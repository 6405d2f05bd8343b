"""Beat schedule rows for django-celery-beat's DatabaseScheduler, written by each app's
migration from that app's ``schedule.SCHEDULE`` (entries: name, task, every_seconds,
expire_seconds). Idempotent: running it again updates the rows and adds new entries."""


def schedule_install(apps, entries) -> None:
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for entry in entries:
        interval, _ = IntervalSchedule.objects.get_or_create(every=entry["every_seconds"], period="seconds")
        PeriodicTask.objects.update_or_create(
            name=entry["name"],
            defaults={
                "task": entry["task"],
                "interval": interval,
                "expire_seconds": entry["expire_seconds"],
                "enabled": True,
            },
        )


def schedule_remove(apps, entries) -> None:
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[entry["name"] for entry in entries]).delete()
