"""manage.py opi_decode FILE|-: print one captured O.P.I. message as JSON."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from terminals.opi.decode import decode_capture
from terminals.opi.errors import ProtocolError, UnsafeXML


class Command(BaseCommand):
    help = (
        "Decode one O.P.I. message (raw XML, or a capture with the 4-byte length prefix) "
        "and print it as JSON. Exits 1 on malformed or unsafe input."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", help="file to read, or - for standard input")

    def handle(self, *args, **options):
        source = options["source"]
        try:
            if source == "-":
                data = sys.stdin.buffer.read()
            else:
                with open(source, "rb") as capture:
                    data = capture.read()
        except OSError as exc:
            raise CommandError(f"cannot read {source}: {exc}") from None
        try:
            decoded = decode_capture(data)
        except UnsafeXML as exc:
            raise CommandError(f"unsafe input refused: {exc}") from None
        except ProtocolError as exc:
            raise CommandError(f"malformed input: {exc}") from None
        self.stdout.write(json.dumps(decoded, indent=2, ensure_ascii=False))
