"""``manage.py emulate_terminals``: the IM30 emulator, with the same options as
``python -m terminals.emulator`` (the demo starts it this way beside the web server)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from terminals.emulator.server import add_arguments, run


class Command(BaseCommand):
    help = "Run emulated CCV IM30 terminals speaking OPI-NL on local sockets."
    # The emulator touches no database; skipping checks keeps its start fast.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        status = run(argparse.Namespace(**options))
        if status:
            raise CommandError(f"emulator exited with status {status}", returncode=status)
