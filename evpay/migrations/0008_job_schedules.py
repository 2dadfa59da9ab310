"""Default schedules for the background jobs; editable afterwards in Admin -> Periodic tasks."""

from django.db import migrations

SCHEDULES = [
    # name, task, every (seconds)
    ("Payment recovery sweep", "charging.recovery_sweep", 60),
    ("Session guard (unstarted release, authorisation expiry)", "charging.session_guard", 60),
    ("Terminal status poll", "terminals.poll_all", 30),
    ("Card brand refresh", "terminals.refresh_all_brands", 24 * 3600),
    ("Period closings due", "terminals.run_due_closings", 300),
]


def create(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, every in SCHEDULES:
        interval, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
        PeriodicTask.objects.get_or_create(name=name, defaults={"task": task, "interval": interval})


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name__in=[s[0] for s in SCHEDULES]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("evpay", "0007_jobrun"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
