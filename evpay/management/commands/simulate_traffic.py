"""Runs the traffic simulator against a running evpay and emulator (see evpay/testbed/simulator.py)."""

import json
import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from evpay.testbed.ocpp_world import session_started_on, simulated_connectors
from evpay.testbed.simulator import Options, Simulator, http_json


class Command(BaseCommand):
    help = "Play chargers and drivers against the charger API and the emulator."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--api-url", default="http://127.0.0.1:8000/api/v1")
        parser.add_argument("--control-url", default="http://127.0.0.1:4090")
        parser.add_argument("--keys-file", default=str(settings.VAR_DIR / "demo-keys.json"))
        parser.add_argument(
            "--ocpp-url",
            action="append",
            default=[],
            help="the OCPP server (ws://host:port/ocpp); repeat for more processes",
        )
        parser.add_argument(
            "--ocpp-file",
            default=str(settings.VAR_DIR / "demo-ocpp.json"),
            help="the OCPP chargers' passwords (seed_demo writes it)",
        )
        parser.add_argument("--speed", type=float, default=1.0, help=">1 runs faster")
        parser.add_argument("--fault-rate", type=float, default=0.1)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--sessions", type=int, default=0, help="stop after this many (0: never)"
        )
        parser.add_argument("--duration", type=float, default=0, help="seconds (0: until stopped)")
        parser.add_argument("--wait", type=float, default=60, help="seconds to wait for the API")

    def handle(self, *args, **o):
        try:
            with open(o["keys_file"]) as fh:
                keys = json.load(fh)
        except OSError as exc:
            raise CommandError(
                f"cannot read API keys from {o['keys_file']}: {exc}; run seed_demo"
            ) from None
        chargers = {}
        if o["ocpp_url"]:
            try:
                with open(o["ocpp_file"]) as fh:
                    chargers = json.load(fh)["chargers"]
            except (OSError, ValueError, KeyError) as exc:
                raise CommandError(f"cannot read {o['ocpp_file']}: {exc}; run seed_demo") from None
        connectors = simulated_connectors(set(keys), chargers)
        # The emulated chargers log every frame at INFO: the OCPP server's message log is the
        # record, and the demo's simulator log would grow by megabytes an hour.
        logging.getLogger("evpay.ocpp_charger.wire").setLevel(logging.WARNING)
        if not connectors:
            raise CommandError("no demo connectors found; run seed_demo")
        health = o["api_url"].split("/api/")[0] + "/healthz"
        deadline = time.monotonic() + o["wait"]
        while True:
            try:
                http_json("GET", health, timeout=3)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise CommandError(f"{health} did not answer within {o['wait']} s") from None
                time.sleep(1)
        simulator = Simulator(
            Options(
                api_url=o["api_url"],
                control_url=o["control_url"],
                keys=keys,
                speed=o["speed"],
                fault_rate=o["fault_rate"],
                seed=o["seed"],
                max_sessions=o["sessions"],
                duration=o["duration"],
                ocpp_urls=o["ocpp_url"],
                chargers=chargers,
                find_session=session_started_on,
            ),
            connectors,
        )
        signal.signal(signal.SIGTERM, lambda *_: simulator.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: simulator.stop_event.set())
        self.stdout.write(f"simulating {len(connectors)} connectors")
        stats = simulator.run()
        self.stdout.write(json.dumps(stats, indent=2, sort_keys=True))
