"""Default beat schedules (django-celery-beat); staff can edit them in the admin afterwards."""

from django.db import migrations


def create_schedules(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.get_or_create(
        name="Worker heartbeat",
        defaults={"task": "evpay.heartbeat", "interval": every_minute, "args": '["worker"]'},
    )


def remove_schedules(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name="Worker heartbeat"
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("evpay", "0003_heartbeat"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
