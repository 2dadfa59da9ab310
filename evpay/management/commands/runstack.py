"""Runs the whole system in the foreground under one supervisor (what `make run` starts).

Demo mode (DEMO=1, the default of `make run`) adds the emulated IM30 fleet, a seeded demo
world and the traffic simulator. Every child is its own process group; if one exits, the
supervisor says which and stops all the others (nothing is restarted silently). Ctrl-C or
SIGTERM stops everything.
"""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from evpay.env import env_bool, env_int
from evpay.testbed.supervisor import CELERY, MANAGE, PYTHON, Child, stop_all, worker_command


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
                "127.0.0.1" if demo else "0.0.0.0",
                "--port",
                str(channel1_port),
            ],
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
                    str(terminals),
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
                ],
            }
        children: dict[str, Child] = {}
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        failed = None
        try:
            for name, argv in processes.items():
                children[name] = Child(name, argv, log_dir)
                if name == "emulator":
                    time.sleep(1)  # listening before the first status poll
            self._banner(host, port, credentials, log_dir, children, demo, control_port)
            while not stopping:
                for name, child in children.items():
                    if not child.alive():
                        failed = name
                        self.stderr.write(
                            f"{name} exited with code {child.popen.returncode}; see "
                            f"{log_dir / (name + '.log')}. Stopping everything."
                        )
                        stopping = True
                        break
                time.sleep(0.5)
        finally:
            self._stop_all(children)
        if failed:
            sys.exit(1)

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
            "Stop:    Ctrl-C",
            "",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def _stop_all(self, children):
        # SIGTERM to each leader: gunicorn, celery and our own commands stop their children.
        for name in stop_all(list(children.values())):
            self.stderr.write(f"{name} did not stop in time; killed it")
        self.stdout.write("All processes stopped.")
