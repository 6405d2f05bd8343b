from django.db import migrations


def create_schedule(apps, schema_editor):
    from alerts.schedule import SCHEDULE

    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for entry in SCHEDULE:
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


def remove_schedule(apps, schema_editor):
    from alerts.schedule import SCHEDULE

    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[entry["name"] for entry in SCHEDULE]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
