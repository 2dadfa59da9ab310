"""Seeds the demo world once: two sites with tariffs, emulated IM30 terminals, connectors and
an API key per site (written to var/demo-keys.json for the traffic simulator)."""

import json
import os

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from sessions.models import ApiKey, Tariff
from terminals.models import Connector, Site, Terminal

# The operator on the demo's receipts: a made-up company, a VAT number of the Dutch form.
OPERATOR = {
    "legal_name": "evpay Demo Laadpunten B.V.",
    "legal_address": "Voorbeeldstraat 1\n1011 AA Amsterdam",
    "vat_number": "NL000099998B57",
}
SITES = [
    {
        "name": "Amsterdam Zuidas P1",
        "address": "Gustav Mahlerlaan 10, 1082 PP Amsterdam",
        "receipt_prefix": "AMS",
        "tariff": {
            "name": "Standard AC/DC",
            "price_per_kwh_minor": 59,
            "start_fee_minor": 35,
            "price_per_minute_minor": 0,
            "idle_fee_per_minute_minor": 10,
            "idle_grace_minutes": 30,
            "authorise_amount_minor": 5000,
        },
    },
    {
        "name": "Utrecht Jaarbeurs P3",
        "address": "Jaarbeursplein 6, 3521 AL Utrecht",
        "receipt_prefix": "UTR",
        "tariff": {
            "name": "Fast charging",
            "price_per_kwh_minor": 69,
            "start_fee_minor": 0,
            "price_per_minute_minor": 1,
            "idle_fee_per_minute_minor": 20,
            "idle_grace_minutes": 15,
            "authorise_amount_minor": 7500,
        },
    },
]


class Command(BaseCommand):
    help = "Create the demo sites, tariffs, terminals, connectors and API keys (once)."

    def add_arguments(self, parser):
        parser.add_argument("--terminals", type=int, default=6)
        parser.add_argument("--base-port", type=int, default=4100, help="emulator channel-0 base")
        parser.add_argument("--terminal-prefix", default="5200")
        parser.add_argument("--keys-file", default=str(settings.VAR_DIR / "demo-keys.json"))

    @transaction.atomic
    def handle(self, *args, terminals, base_port, terminal_prefix, keys_file, **options):
        if Site.objects.filter(name=SITES[0]["name"]).exists():
            self.stdout.write("demo world already seeded")
            return
        keys = {}
        sites = []
        for spec in SITES:
            site = Site.objects.create(
                name=spec["name"],
                address=spec["address"],
                currency="EUR",
                receipt_prefix=spec["receipt_prefix"],
                **OPERATOR,
            )
            Tariff.objects.create(site=site, vat_rate_bp=2100, **spec["tariff"])
            _, raw = ApiKey.issue(f"demo chargers {site.name}", site)
            keys[site.name] = raw
            sites.append(site)
        for index in range(terminals):
            site = sites[index % len(sites)]
            # The emulator numbers its terminals prefix + index (1-based) and gives terminal i
            # channel-0 port base + 3i; channel 1 goes to the device-channel service.
            terminal_id = f"{terminal_prefix}{index + 1:0{8 - len(terminal_prefix)}d}"
            terminal = Terminal.objects.create(
                terminal_id=terminal_id,
                name=f"{site.name.split()[0]} IM30 #{index // len(sites) + 1}",
                site=site,
                host="127.0.0.1",
                profile={
                    "port0": base_port + 3 * index,
                    "channel1_listener": "pos",
                    "workstation_id": "EVPAY1",
                    "timeouts": {"authorise": 90, "card_token": 90, "mifare_uid": 60},
                },
            )
            for plug in (1, 2):
                Connector.objects.create(
                    terminal=terminal,
                    evse_id=f"NL*EVP*E{terminal_id}*{plug}",
                    label=f"{'Left' if plug == 1 else 'Right'}, 22 kW",
                )
        fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(keys, fh, indent=2)
        self.stdout.write(
            f"seeded {len(sites)} sites, {terminals} terminals, {terminals * 2} connectors"
        )
