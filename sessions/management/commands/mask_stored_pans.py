"""Mask card numbers already stored before evpay/pan.py masked them on the way in.

    python manage.py mask_stored_pans            # rewrite what needs it, print counts
    python manage.py mask_stored_pans --dry-run  # only count

Safe to run twice (masked text stays as it is) and to stop half-way. Identifiers we match on
(card token, PAR, STAN) are left alone, as on storage.
"""

from django.core.management.base import BaseCommand

from evpay.models import AuditEvent, ExceptionRecord
from evpay.pan import mask_pans
from sessions.models import ChargingSession, DeviceMessage, TerminalTransaction
from terminals.models import PeriodClosing

# Text that came from a terminal, or was written from it (audit reasons, exception texts).
TEXT_FIELDS = (
    (ChargingSession, ("masked_pan",)),
    (
        TerminalTransaction,
        ("masked_pan", "raw_response", "error_text", "detail", "terminal_text", "resolution"),
    ),
    (PeriodClosing, ("raw_response", "error")),
    (AuditEvent, ("reason",)),
    (ExceptionRecord, ("title", "what_happened")),
)


class Command(BaseCommand):
    help = "Mask full card numbers in rows stored before masking on storage existed."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count, change nothing")

    def handle(self, *args, dry_run=False, **options):
        for model, fields in TEXT_FIELDS:
            changed = 0
            for pk, *values in model.objects.values_list("pk", *fields).iterator():
                masked = {f: mask_pans(v) for f, v in zip(fields, values, strict=True) if v}
                masked = {f: v for f, v in masked.items() if v != values[fields.index(f)]}
                if masked:
                    changed += 1
                    if not dry_run:
                        model.objects.filter(pk=pk).update(**masked)
            self.stdout.write(f"{model._meta.label}: {changed} row(s)")
        changed = 0
        for pk, lines in DeviceMessage.objects.values_list("pk", "lines").iterator():
            masked = [mask_pans(line) if isinstance(line, str) else line for line in lines or []]
            if masked != lines:
                changed += 1
                if not dry_run:
                    DeviceMessage.objects.filter(pk=pk).update(lines=masked)
        self.stdout.write(f"{DeviceMessage._meta.label}: {changed} row(s)")
        if dry_run:
            self.stdout.write("dry run: nothing changed")
