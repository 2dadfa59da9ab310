"""The device-channel service: listens on channel 1 for every terminal ("POS listens")."""

import logging
import signal
import socket
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection
from django.utils import timezone

from evpay.models import Heartbeat
from sessions.device_channel import DatabaseDeviceHandler
from terminals.opi.device_channel import DeviceChannelServer

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Accept channel-1 connections from all terminals and store their device output."
    # A long-running service: the web process runs the system checks.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--host",
            default=settings.EVPAY_DEVICE_CHANNEL_HOST,
            help="interface to listen on (EVPAY_DEVICE_CHANNEL_HOST; the terminals' network)",
        )
        parser.add_argument("--port", type=int, default=settings.EVPAY_DEVICE_CHANNEL_PORT)
        parser.add_argument(
            "--heartbeat", type=float, default=15, help="seconds between heartbeats"
        )
        parser.add_argument(
            "--max-connections",
            type=int,
            default=settings.EVPAY_DEVICE_CHANNEL_MAX_CONNECTIONS,
            help="open connections in all (EVPAY_DEVICE_CHANNEL_MAX_CONNECTIONS)",
        )
        parser.add_argument(
            "--max-per-address",
            type=int,
            default=settings.EVPAY_DEVICE_CHANNEL_MAX_PER_ADDRESS,
            help="open connections from one address (EVPAY_DEVICE_CHANNEL_MAX_PER_ADDRESS)",
        )

    def handle(self, *args, host, port, heartbeat, max_connections, max_per_address, **options):
        if max_connections < 1 or max_per_address < 1:
            raise CommandError("--max-connections and --max-per-address must be at least 1")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        server = DeviceChannelServer(
            host,
            port,
            DatabaseDeviceHandler(),
            max_connections=max_connections,
            max_connections_per_host=max_per_address,
        ).start()
        self.stdout.write(f"device channel listening on {host}:{server.port}", ending="\n")
        self.stdout.flush()
        try:
            while not stop.is_set():
                try:
                    Heartbeat.objects.update_or_create(
                        name="device_channel",
                        defaults={
                            "seen_at": timezone.now(),
                            "detail": f"{socket.gethostname()}:{server.port}",
                        },
                    )
                except DatabaseError as exc:
                    # A database restart must not take channel 1 down with it (found by the
                    # soak: the service died and every receipt went unacknowledged).
                    log.warning("device channel heartbeat failed: %s", exc)
                    connection.close()
                stop.wait(heartbeat)
        finally:
            server.stop()
            self.stdout.write("device channel stopped")
