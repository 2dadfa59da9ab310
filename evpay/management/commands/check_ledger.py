"""Compare our records with the emulator's ledger; exit 1 if a must-be-0 figure is not 0."""

import json
import sys

from django.core.management.base import BaseCommand

from evpay.testbed.ledger_check import compare
from evpay.testbed.simulator import http_json

MUST_BE_ZERO = ("double_captures", "lost_money", "disagreements", "wrong_card_stops")


class Command(BaseCommand):
    help = "Compare captures/releases with the emulator's ledger (ground truth)."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--control-url", default="http://127.0.0.1:4090")

    def handle(self, *args, control_url, **options):
        _, ledger = http_json("GET", control_url.rstrip("/") + "/ledger", timeout=30)
        # Run against a stack that is still taking payments: an authorisation may be answered
        # on the terminal and not yet recorded here (in progress, not lost).
        figures = compare(ledger, live=True)
        self.stdout.write(json.dumps(figures, indent=2, sort_keys=True))
        if any(figures[k] for k in MUST_BE_ZERO):
            sys.exit(1)
