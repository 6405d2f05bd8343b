from django.db import migrations


def create_schedule(apps, schema_editor):
    from election_monitor.schedules import schedule_install
    from metrics.schedule import SCHEDULE

    schedule_install(apps, SCHEDULE)


def remove_schedule(apps, schema_editor):
    from election_monitor.schedules import schedule_remove
    from metrics.schedule import SCHEDULE

    schedule_remove(apps, SCHEDULE)


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
