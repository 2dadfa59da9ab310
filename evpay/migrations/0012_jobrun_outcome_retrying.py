# Hand-written: JobRun.Outcome gains "retrying" (a "try later" with another attempt coming,
# evpay/jobs.py). Choices only; the column already holds up to 10 characters.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("evpay", "0010_exception_kind_configuration"),
    ]

    operations = [
        migrations.AlterField(
            model_name="jobrun",
            name="outcome",
            field=models.CharField(
                choices=[
                    ("running", "Running"),
                    ("ok", "OK"),
                    ("partial", "Partly failed"),
                    ("retrying", "Retrying"),
                    ("failed", "Failed"),
                ],
                default="running",
                max_length=10,
            ),
        ),
    ]
