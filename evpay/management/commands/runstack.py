"""Runs the whole system in the foreground under one supervisor (what `make run` starts).

Demo mode (DEMO=1, the default of `make run`) adds the emulated IM30 fleet, a seeded demo
world (with OCPP chargers and one charge point reserved for an external charger) and the
traffic simulator, which plays the JSON-API chargers and, over real WebSockets, the OCPP ones. Every child is its own process group. A child that exits is
restarted with exponential backoff (1 s, 2 s, 4 s ... EVPAY_RESTART_BACKOFF_MAX), said on the
console with its exit code; one that keeps crashing (3 restarts in 10 minutes) is reported
loudly and shown to staff as a banner (var/supervisor.json). Only Ctrl-C or SIGTERM stops
everything.

A restarted emulator comes back with the same terminals on the same ports (they are fixed by
its arguments and the seeded rows) and, from its journal (var/emulator-journal.jsonl), the
reservations, captures and closings it had committed, as a real terminal after a reboot: the
sessions that were charging can still be captured. What it does not keep is the request it was
serving when it died: that one is "outcome unknown" and goes to recovery like any other.
"""

import argparse
import json
import os
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from evpay.env import env_bool, env_int
from evpay.testbed.supervisor import CELERY, MANAGE, PYTHON, Supervisor, worker_command


def _now() -> str:
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")


class Command(BaseCommand):
    help = (
        "Start web, worker, beat and the device channel (plus emulator and simulator in demo mode)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("EVPAY_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=env_int("EVPAY_PORT", 8000, minimum=1))
        parser.add_argument(
            "--demo",
            action=argparse.BooleanOptionalAction,
            default=env_bool("DEMO", True),
            help="emulator fleet + simulated traffic",
        )
        parser.add_argument(
            "--concurrency", type=int, default=env_int("EVPAY_WORKER_THREADS", 12, minimum=1)
        )
        parser.add_argument(
            "--terminals", type=int, default=env_int("EVPAY_DEMO_TERMINALS", 6, minimum=1)
        )
        parser.add_argument(
            "--speed", type=float, default=float(os.environ.get("EVPAY_DEMO_SPEED", "1"))
        )
        parser.add_argument("--no-migrate", action="store_true")

    def handle(self, *args, host, port, demo, concurrency, terminals, speed, no_migrate, **options):
        var = Path(settings.VAR_DIR)
        log_dir = var / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        credentials = var / "credentials.txt"
        emulator_base = env_int("EVPAY_EMULATOR_BASE_PORT", 4100, minimum=1)
        control_port = env_int("EVPAY_EMULATOR_CONTROL_PORT", 4090, minimum=1)
        channel1_port = env_int("EVPAY_DEVICE_CHANNEL_PORT", 4102, minimum=1)
        ocpp_host, ocpp_port = settings.EVPAY_OCPP_HOST, settings.EVPAY_OCPP_PORT
        # Chargers reach the interface the server listens on; a wildcard is reached locally.
        ocpp_reach = "127.0.0.1" if ocpp_host in ("0.0.0.0", "::", "") else ocpp_host  # noqa: S104
        ocpp_scheme = "wss" if settings.EVPAY_OCPP_TLS_CERT else "ws"
        ocpp_url = f"{ocpp_scheme}://{ocpp_reach}:{ocpp_port}/ocpp"
        if not no_migrate:
            call_command("migrate", interactive=False, verbosity=0)
        with open(os.devnull, "w") as quiet:  # the banner prints the credentials file instead
            call_command("ensure_staff", demo=True, credentials_file=str(credentials), stdout=quiet)
            if demo:
                call_command(
                    "seed_demo", terminals=terminals, base_port=emulator_base, stdout=quiet
                )

        python, manage, celery = PYTHON, MANAGE, CELERY
        processes = {
            "device_channel": manage
            + [
                "device_channel",
                "--host",
                # The demo's terminals are local; real ones reach the configured interface.
                "127.0.0.1" if demo else settings.EVPAY_DEVICE_CHANNEL_HOST,
                "--port",
                str(channel1_port),
            ]
            # The demo's emulated terminals all connect from 127.0.0.1.
            + (["--max-per-address", str(max(8, 2 * terminals))] if demo else []),
            "ocpp": manage + ["ocpp_server", "--host", ocpp_host, "--port", str(ocpp_port)],
            "worker": worker_command(concurrency),
            "beat": celery
            + [
                "beat",
                "--loglevel",
                "INFO",
                "--pidfile",
                str(var / "beat.pid"),
                "--schedule",
                str(var / "celerybeat-schedule"),
            ],
            "web": [
                python,
                "-m",
                "gunicorn",
                "evpay.wsgi",
                "--bind",
                f"{host}:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--access-logfile",
                "-",
            ],
        }
        if demo:
            processes = {
                "emulator": [
                    python,
                    "-m",
                    "terminals.emulator",
                    "--count",
                    # One more than the simulated ones: it serves the external charger.
                    str(terminals + 1),
                    "--host",
                    "127.0.0.1",
                    "--base-port",
                    str(emulator_base),
                    "--control-port",
                    str(control_port),
                    "--channel1",
                    "pos",
                    "--pos-host",
                    "127.0.0.1",
                    "--pos-port",
                    str(channel1_port),
                    "--card-wait",
                    "60",
                    # A restarted emulator must still know the reservations it holds.
                    "--journal",
                    str(var / "emulator-journal.jsonl"),
                ],
                **processes,
                "simulator": manage
                + [
                    "simulate_traffic",
                    "--api-url",
                    f"http://{host}:{port}/api/v1",
                    "--control-url",
                    f"http://127.0.0.1:{control_port}",
                    "--speed",
                    str(speed),
                    "--ocpp-url",
                    ocpp_url,
                ],
            }
        supervisor = Supervisor(
            processes,
            log_dir,
            state_file=Path(settings.EVPAY_SUPERVISOR_STATE_FILE),
            say=lambda line: self.stderr.write(f"{_now()} {line}"),
            warn=lambda line: self.stderr.write(self.style.ERROR(f"{_now()} {line}")),
            backoff_max=settings.EVPAY_RESTART_BACKOFF_MAX,
            settle={"emulator": 1.0},  # listening before the first status poll
        )
        kicked_off = False

        def kick_off(sup: Supervisor) -> None:
            # Once the worker consumes: brands for terminals that have none, and a first status
            # poll, so the dashboard leaves "unknown" in seconds rather than at beat's pace.
            nonlocal kicked_off
            worker = sup.children.get("worker")
            if kicked_off or worker is None or "ready." not in worker.output():
                return
            kicked_off = True
            try:
                self._start_up_jobs()
            except Exception as exc:  # the broker's own retries failed: beat catches up later
                self.stderr.write(f"start-up jobs not queued: {exc}")

        try:
            supervisor.start()
            self._banner(host, port, credentials, log_dir, supervisor.children, demo, control_port)
            self._ocpp_banner(ocpp_url, host, port, demo, control_port, var / "demo-ocpp.json")
            supervisor.run(on_tick=kick_off)
        finally:
            for name in supervisor.stop():
                self.stderr.write(f"{name} did not stop in time; killed it")
            self.stdout.write("All processes stopped.")

    def _start_up_jobs(self) -> None:
        from terminals.models import Terminal
        from terminals.tasks import poll_all_terminals_task, refresh_brands_task

        poll_all_terminals_task.delay()
        for pk in Terminal.objects.filter(enabled=True, brands__isnull=True).values_list(
            "pk", flat=True
        ):
            refresh_brands_task.delay(pk, triggered_by="start-up")

    def _banner(self, host, port, credentials, log_dir, children, demo, control_port):
        accounts = (
            ["  " + line for line in credentials.read_text().splitlines()]
            if credentials.exists()
            else ["  (see var/credentials.txt)"]
        )
        lines = [
            "",
            f"evpay is running at http://{host}:{port}/"
            + ("  (demo: simulated chargers and drivers)" if demo else ""),
            "",
            "Log in with:",
            *accounts,
            "",
            "Running: " + ", ".join(f"{n} (pid {c.pid})" for n, c in children.items()),
            *([f"Emulator control API: http://127.0.0.1:{control_port}/terminals"] if demo else []),
            f"Logs:    {log_dir}/<name>.log",
            "Crashes: a child that exits is restarted with backoff (said here, and state in "
            f"{settings.EVPAY_SUPERVISOR_STATE_FILE})",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def _ocpp_banner(self, ocpp_url, host, port, demo, control_port, ocpp_file):
        lines = [f"OCPP:    {ocpp_url}/<charge point id>  (OCPP 1.6J and 2.0.1, HTTP Basic auth)"]
        reserved = {}
        if demo and ocpp_file.exists():
            known = json.loads(ocpp_file.read_text())
            reserved = known["chargers"].get(known.get("reserved"), {})
        if reserved:
            cp, tid = known["reserved"], reserved["terminal_id"]
            lines += [
                "Your own charger (not played by the simulator):",
                f"  URL {ocpp_url}/{cp}   user {cp}   password {reserved['password']}",
                "  its connector: 1.6 connectorId 1, or 2.0.1 evseId 1; cable in starts a "
                f"session, payments at emulated terminal {tid}",
                "  present a card when the terminal asks: "
                f"curl -X POST http://127.0.0.1:{control_port}/terminals/{tid}/present "
                "-H 'Content-Type: application/json' -d '{\"card\": \"visa_ok\"}'",
                "  stop by card: POST http://"
                f"{host}:{port}/api/v1/terminals/{tid}/card-read (key: var/demo-keys.json), "
                "then present the same card; or stop at the charger",
            ]
        lines += ["Stop:    Ctrl-C", ""]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()
