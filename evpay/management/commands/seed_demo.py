"""Seeds the demo world once: two sites with tariffs, emulated IM30 terminals, connectors and
an API key per site (written to var/demo-keys.json for the traffic simulator); and OCPP
chargers for a share of the connectors plus one charge point reserved for an external charger
(passwords in var/demo-ocpp.json; see `seed_ocpp`)."""

import json
import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from evpay import audit
from evpay.audit import Actor
from evpay.testbed.ocpp_world import link_connector
from sessions.models import ApiKey, Tariff
from terminals.models import ChargePoint, Connector, OcppVersion, Site, Terminal

# The charge point an evaluator connects their own charger to: the simulator leaves it and
# its terminal alone. Its connector 1 answers to OCPP 1.6 (connectorId 1), its connector 2 to
# OCPP 2.0.1 (evseId 1), so a charger of either version can connect as it is.
RESERVED_CHARGE_POINT = "EVPAY-EXTERNAL-1"

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
        parser.add_argument("--ocpp-file", default=str(settings.VAR_DIR / "demo-ocpp.json"))

    def handle(self, *args, terminals, base_port, terminal_prefix, keys_file, ocpp_file, **o):
        self.seed_world(terminals, base_port, terminal_prefix, keys_file)
        seed_ocpp(terminals, base_port, terminal_prefix, Path(ocpp_file))

    @transaction.atomic
    def seed_world(self, terminals, base_port, terminal_prefix, keys_file):
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
            terminal = _terminal(
                index, site, base_port, terminal_prefix, f"IM30 #{index // len(sites) + 1}"
            )
            terminal_id = terminal.terminal_id
            for plug in (1, 2):
                Connector.objects.create(
                    terminal=terminal,
                    evse_id=f"NL*EVP*E{terminal_id}*{plug}",
                    label=f"{'Left' if plug == 1 else 'Right'}, 22 kW",
                )
        write_secret_file(Path(keys_file), keys)
        self.stdout.write(
            f"seeded {len(sites)} sites, {terminals} terminals, {terminals * 2} connectors"
        )


def _terminal(index, site, base_port, prefix, label) -> Terminal:
    # The emulator numbers its terminals prefix + index (1-based) and gives terminal i
    # channel-0 port base + 3i; channel 1 goes to the device-channel service.
    return Terminal.objects.create(
        terminal_id=f"{prefix}{index + 1:0{8 - len(prefix)}d}",
        name=f"{site.name.split()[0]} {label}",
        site=site,
        host="127.0.0.1",
        profile={
            "port0": base_port + 3 * index,
            "channel1_listener": "pos",
            "workstation_id": "EVPAY1",
            "timeouts": {"authorise": 90, "card_token": 90, "mifare_uid": 60},
        },
    )


def ocpp_version_for(index: int) -> str | None:
    """Which demo terminals' connectors belong to an OCPP charger: a third 1.6, a third
    2.0.1, the rest stay on the JSON API (so the demo shows all three)."""
    return {1: OcppVersion.V16, 2: OcppVersion.V201}.get(index % 3)


def write_secret_file(path: Path, data: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)


@transaction.atomic
def seed_ocpp(terminals: int, base_port: int, prefix: str, ocpp_file: Path) -> dict:
    """The demo's OCPP chargers (safe to repeat; also upgrades a world seeded before OCPP):
    the connectors of every terminal `ocpp_version_for` names become one charger's, and
    terminal number terminals + 1 (the emulator runs one more) serves the reserved charge
    point. Passwords are generated when a charger has none in `ocpp_file` (0600): only their
    hash is in the database."""
    actor = Actor.system("seed_demo")
    known = json.loads(ocpp_file.read_text()) if ocpp_file.exists() else {}
    chargers = known.get("chargers", {})
    site = Site.objects.filter(name=SITES[0]["name"]).first()
    if site is None:
        return known
    demo_terminals = Terminal.objects.filter(terminal_id__startswith=prefix).order_by("terminal_id")
    plan = []
    for index, terminal in enumerate(demo_terminals[:terminals]):
        version = ocpp_version_for(index)
        if version is not None:
            identity = f"EVPAY-CP-{terminal.terminal_id}"
            plan.append(
                (identity, terminal, version, list(terminal.connectors.order_by("evse_id")))
            )
    reserved_terminal = Terminal.objects.filter(
        terminal_id=f"{prefix}{terminals + 1:0{8 - len(prefix)}d}"
    ).first() or _terminal(terminals, site, base_port, prefix, "IM30 for an external charger")
    if not reserved_terminal.connectors.exists():
        for plug, version in ((1, "1.6"), (2, "2.0.1")):
            Connector.objects.create(
                terminal=reserved_terminal,
                evse_id=f"NL*EVP*E{reserved_terminal.terminal_id}*{plug}",
                label=f"External charger, OCPP {version}",
            )
    for identity, terminal, version, connectors in plan + [
        (RESERVED_CHARGE_POINT, reserved_terminal, None, None)
    ]:
        charge_point, created = ChargePoint.objects.get_or_create(
            identity=identity,
            defaults={
                "site": terminal.site,
                "name": "External charger (not simulated)"
                if version is None
                else f"Emulated OCPP {version} charger",
            },
        )
        if created:
            audit.record(actor, charge_point, "ocpp.charge_point_created", reason="demo seed")
            if version is None:
                first, second = reserved_terminal.connectors.order_by("evse_id")[:2]
                link_connector(first, charge_point, 1, OcppVersion.V16)
                link_connector(second, charge_point, 1, OcppVersion.V201)
            else:
                for number, connector in enumerate(connectors, start=1):
                    link_connector(connector, charge_point, number, version)
        if identity not in chargers or not charge_point.password_hash:
            password = charge_point.set_new_password()
            audit.record(actor, charge_point, "ocpp.password_set", reason="demo seed")
            chargers[identity] = {"password": password}
        chargers[identity].update(
            {
                "version": version or "1.6 or 2.0.1",
                "terminal_id": terminal.terminal_id,
                "connectors": len(connectors) if connectors else 2,
                "reserved": version is None,
            }
        )
    known = {"chargers": chargers, "reserved": RESERVED_CHARGE_POINT}
    write_secret_file(ocpp_file, known)
    return known
