"""The OCPP central system: chargers connect to ws(s)://host:port/ocpp/<charge point id>."""

import asyncio
import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sessions.ocpp.server import OcppServer, tls_context

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Serve OCPP 1.6J and 2.0.1 chargers over WebSocket (one of any number of processes)."
    # A long-running service: the web process runs the system checks.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--host",
            default=settings.EVPAY_OCPP_HOST,
            help="interface to listen on (EVPAY_OCPP_HOST)",
        )
        parser.add_argument("--port", type=int, default=settings.EVPAY_OCPP_PORT)
        parser.add_argument(
            "--max-connections", type=int, default=settings.EVPAY_OCPP_MAX_CONNECTIONS
        )
        parser.add_argument(
            "--max-upgrades-per-minute",
            type=int,
            default=600,
            help="upgrade requests a minute per address (chargers behind one NAT share it)",
        )
        parser.add_argument(
            "--poll", type=float, default=0.5, help="seconds between command-queue polls"
        )
        parser.add_argument(
            "--ping-interval",
            type=float,
            default=60,
            help="seconds between WebSocket pings; an unanswered one closes the socket",
        )

    def handle(self, *args, host, port, max_connections, poll, ping_interval, **options):
        max_upgrades = options["max_upgrades_per_minute"]
        cert, key = settings.EVPAY_OCPP_TLS_CERT, settings.EVPAY_OCPP_TLS_KEY
        if bool(cert) != bool(key):
            raise CommandError("set both EVPAY_OCPP_TLS_CERT and EVPAY_OCPP_TLS_KEY, or neither")
        try:
            tls = tls_context(cert, key) if cert else None
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot load the OCPP TLS certificate: {exc}") from None
        # The ocpp package logs every frame at INFO (idTags included): ours is the record.
        logging.getLogger("ocpp").setLevel(logging.WARNING)
        server = OcppServer(
            host,
            port,
            tls=tls,
            max_connections=max_connections,
            max_upgrades_per_minute=max_upgrades,
            poll=poll,
            ping_interval=ping_interval,
            command_timeout=settings.EVPAY_OCPP_COMMAND_TIMEOUT_SECONDS,
        )
        scheme = "wss" if tls else "ws"

        def ready(srv):
            self.stdout.write(
                f"OCPP server listening on {scheme}://{host}:{srv.port}/ocpp/<charge point id>"
                f" as {srv.holder}"
            )
            self.stdout.flush()

        async def main():
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await server.run(stop, ready)

        asyncio.run(main())
        self.stdout.write("OCPP server stopped")
