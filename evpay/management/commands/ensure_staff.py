"""Creates the first accounts so a fresh install can log in.

The admin password comes from EVPAY_ADMIN_PASSWORD, or is generated and printed once.
With --demo also a viewer and an operator (passwords from EVPAY_DEMO_PASSWORD or generated).
Existing accounts are left untouched: re-running never resets a password someone changed.
"""

import os
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction


class Command(BaseCommand):
    help = "Create the admin account (and demo viewer/operator with --demo) if missing."

    def add_arguments(self, parser):
        parser.add_argument("--demo", action="store_true", help="also create viewer and operator")
        parser.add_argument(
            "--credentials-file", help="append created credentials here (mode 0600)"
        )

    @transaction.atomic
    def handle(self, *args, demo=False, credentials_file=None, **options):
        wanted = [("admin", "admin", os.environ.get("EVPAY_ADMIN_PASSWORD"))]
        if demo:
            demo_pw = os.environ.get("EVPAY_DEMO_PASSWORD")
            wanted += [("operator", "operator", demo_pw), ("viewer", "viewer", demo_pw)]
        User = get_user_model()
        lines, created = [], []
        for username, role, password in wanted:
            if User.objects.filter(username=username).exists():
                lines.append(f"{username:9} (exists; password unchanged)  role: {role}")
                continue
            password = password or secrets.token_urlsafe(12)
            user = User.objects.create_user(username=username, password=password)
            if role == "admin":
                user.is_staff = user.is_superuser = True
                user.save(update_fields=["is_staff", "is_superuser"])
            user.groups.add(Group.objects.get(name=role))
            lines.append(f"{username:9} password: {password}  role: {role}")
            created.append(lines[-1])
        for line in lines:
            self.stdout.write(line)
        if credentials_file and created:
            # Appended, so the generated passwords stay readable for the next `make run`.
            fd = os.open(credentials_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as fh:
                fh.write("\n".join(created) + "\n")
