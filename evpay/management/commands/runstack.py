"""Runs the whole system in the foreground under one supervisor (what `make run` starts).

Every child is a separate process group. If one exits, the supervisor says so and stops
all the others (it never restarts anything silently). Ctrl-C or SIGTERM stops everything.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Start web server, Celery worker and beat in the foreground; Ctrl-C stops all."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("EVPAY_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("EVPAY_PORT", "8000")))
        parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
        parser.add_argument("--no-migrate", action="store_true")

    def handle(self, *args, host, port, concurrency, no_migrate, **options):
        log_dir = Path(settings.VAR_DIR) / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        credentials = Path(settings.VAR_DIR) / "credentials.txt"
        if not no_migrate:
            call_command("migrate", interactive=False, verbosity=0)
        with open(os.devnull, "w") as quiet:  # the banner prints the credentials file instead
            call_command("ensure_staff", demo=True, credentials_file=str(credentials), stdout=quiet)

        python = sys.executable
        celery = [python, "-m", "celery", "-A", "evpay"]
        processes = {
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
            "worker": celery
            + [
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(concurrency),
                "--without-gossip",
                "--without-mingle",
            ],
            "beat": celery
            + ["beat", "--loglevel", "INFO", "--pidfile", str(Path(settings.VAR_DIR) / "beat.pid")],
        }
        children: dict[str, subprocess.Popen] = {}
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            for name, argv in processes.items():
                log_file = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
                children[name] = subprocess.Popen(
                    argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
                )
            self._banner(host, port, credentials, log_dir, children)
            while not stopping:
                for name, child in children.items():
                    if child.poll() is not None:
                        self.stderr.write(
                            f"{name} exited with code {child.returncode}; see {log_dir / (name + '.log')}."
                            " Stopping everything."
                        )
                        stopping = True
                        break
                time.sleep(0.5)
        finally:
            self._stop_all(children)
        if any(c.returncode not in (0, -signal.SIGTERM, None) for c in children.values()):
            sys.exit(1)

    def _banner(self, host, port, credentials, log_dir, children):
        lines = [
            "",
            f"evpay is running at http://{host}:{port}/",
            "",
            "Log in with:",
            *(
                ["  " + line for line in credentials.read_text().splitlines()]
                if credentials.exists()
                else ["  (see var/credentials.txt)"]
            ),
            "",
            "Running: " + ", ".join(f"{n} (pid {c.pid})" for n, c in children.items()),
            f"Logs:    {log_dir}/<name>.log",
            "Stop:    Ctrl-C",
            "",
        ]
        self.stdout.write("\n".join(lines))

    def _stop_all(self, children):
        # SIGTERM to each leader only: gunicorn and celery stop their own children gracefully.
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 15
        for name, child in children.items():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in time; killing it")
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        self.stdout.write("All processes stopped.")
