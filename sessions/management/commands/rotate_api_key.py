"""Replace a charger's API key with an overlap, so the charger can be reconfigured in time.

    python manage.py rotate_api_key charger-1                    # old key expires in 24 h
    python manage.py rotate_api_key charger-1 --overlap-hours 2
    python manage.py rotate_api_key charger-1 --prefix 1a2b3c4d  # when several keys share a name

Prints the new key once (only its hash is stored). The old key keeps working until it expires;
revoke it in the admin to cut it off at once.
"""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.utils import timezone

from sessions.models import ApiKey


class Command(BaseCommand):
    help = "Issue a new API key for the same site and let the old one expire after an overlap."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the key's name (as in Admin -> API keys)")
        parser.add_argument(
            "--overlap-hours",
            type=float,
            default=ApiKey.ROTATION_OVERLAP.total_seconds() / 3600,
            help="how long the old key keeps working (default: %(default)s)",
        )
        parser.add_argument("--prefix", help="pick one key when several live keys share the name")

    def handle(self, *args, name, overlap_hours, prefix, **options):
        if overlap_hours < 0:
            raise CommandError("--overlap-hours cannot be negative")
        live = ApiKey.objects.select_related("site").filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()), name=name, revoked=False
        )
        if prefix:
            live = live.filter(prefix=prefix)
        keys = list(live)
        if not keys:
            raise CommandError(f"no live API key named {name!r}")
        if len(keys) > 1:
            choices = ", ".join(f"{k.prefix} ({k.site})" for k in keys)
            raise CommandError(
                f"{len(keys)} live keys are named {name!r}: pick one with --prefix ({choices})"
            )
        old = keys[0]
        new, raw = old.rotate(timedelta(hours=overlap_hours))
        self.stdout.write(f"New API key for {new.name} at {new.site}: {raw}")
        self.stdout.write("Copy it now: it is not stored and will not be shown again.")
        self.stdout.write(f"The old key {old} stops working at {old.expires_at.isoformat()}.")
