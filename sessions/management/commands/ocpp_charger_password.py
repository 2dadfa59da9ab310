"""Give a charger a new OCPP password (security profile 1/2), printed once."""

from django.core.management.base import BaseCommand, CommandError

from evpay import audit
from evpay.audit import Actor
from terminals.models import ChargePoint


class Command(BaseCommand):
    help = "Generate a new HTTP Basic password for a charge point and print it once."

    def add_arguments(self, parser):
        parser.add_argument("identity", help="the charge point id (as in its OCPP URL)")

    def handle(self, *args, identity, **options):
        cp = ChargePoint.objects.filter(identity=identity).first()
        if cp is None:
            raise CommandError(f"no charge point {identity!r}")
        password = cp.set_new_password()
        audit.record(Actor.system("manage.py"), cp, "ocpp.password_set", reason="new password")
        # Only here, once: not logged, not stored except as a hash.
        self.stdout.write(f"charge point {cp.identity}: user name {cp.identity}")
        self.stdout.write(f"password: {password}")
