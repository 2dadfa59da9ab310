"""Channel 1 through the database, for the "POS listens" arrangement with many workers.

The long-running device-channel service (`manage.py device_channel`) accepts channel-1
connections from every terminal. Each DeviceRequest belongs to the request currently open on
that terminal, which is the newest TerminalTransaction row still SENT (written before the
worker sent it, and the lease guarantees there is only one). Receipts and display texts are
stored against it; DeliveryBox is decided from the database exactly as the worker would.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from django.db import close_old_connections
from django.utils import timezone

from sessions.journal import clean_text
from sessions.models import DeviceMessage, Operation, TerminalTransaction, TxState
from sessions.services import delivery_check
from terminals.models import Terminal
from terminals.opi.device_channel import RecordingDeviceHandler
from terminals.opi.messages import RECEIPT_TARGETS, DeviceRequest, Output

log = logging.getLogger(__name__)

# The longest channel-1 grace a profile may set (profile.channel1_grace_seconds, validated
# there): the database query for late output looks no further back than this.
MAX_LATE_SECONDS = 30


def _own_request_id(device_request_id: str | None) -> str:
    """Our RequestID inside the terminal's id for a device request: `123`, `123.1`, `123-d0`."""
    return re.split(r"[.\-]", device_request_id or "", maxsplit=1)[0]


def _only(candidates) -> TerminalTransaction | None:
    """The one candidate, or None when there are none or several: never a guess."""
    found = list(candidates.select_related("session", "terminal")[:2])
    return found[0] if len(found) == 1 else None


def request_for(request: DeviceRequest, *, late: bool = False) -> TerminalTransaction | None:
    """The request of ours a DeviceRequest belongs to, by what it carries: its TerminalID;
    else our RequestID inside its own (among the requests of the terminal at the address it
    came from, when that address is a terminal's); else that terminal's open request; else the
    single open request of its workstation. Ambiguity gives None: output is never attached to
    another terminal's request. `late`: a request answered moments ago instead of an open one (a
    display update after the final response), within its terminal's channel-1 grace."""
    if late:
        since = timezone.now() - timedelta(seconds=MAX_LATE_SECONDS)
        rows = TerminalTransaction.objects.filter(completed_at__gte=since)
    else:
        rows = TerminalTransaction.objects.filter(state=TxState.SENT)
    rows = rows.order_by("-id")
    if request.terminal_id:
        tx = rows.filter(terminal__terminal_id=request.terminal_id).first()
    else:
        if request.workstation_id:
            rows = rows.filter(workstation_id=request.workstation_id)
        # The address it came from rules out every other terminal's requests (where it names
        # a terminal host at all: behind NAT or a hostname in the profile it names none).
        hosts = []
        if request.peer_host:
            hosts = list(
                Terminal.objects.filter(host=request.peer_host).values_list("pk", flat=True)
            )
        if hosts:
            rows = rows.filter(terminal__in=hosts)
        ours = _own_request_id(request.request_id)
        tx = _only(rows.filter(request_id=ours)) if ours.isdigit() else None
        if tx is None and len(hosts) == 1:
            tx = rows.first()
        if tx is None and request.workstation_id and not late:
            tx = _only(rows)
    if tx is not None and late and not _within_grace(tx):
        return None
    return tx


def _within_grace(tx: TerminalTransaction) -> bool:
    grace = timedelta(seconds=tx.terminal.opi_profile().channel1_grace_seconds)
    return tx.completed_at is not None and tx.completed_at >= timezone.now() - grace


class DatabaseDeviceHandler(RecordingDeviceHandler):
    """Stores outputs on the open transaction; answers Failure for a receipt it cannot store."""

    def __init__(self) -> None:
        super().__init__(on_delivery_box=self._delivery_allowed)

    def handle(self, request: DeviceRequest):
        close_old_connections()  # one thread per terminal connection, long-lived
        try:
            return super().handle(request)
        finally:
            close_old_connections()

    def store_output(self, request: DeviceRequest, output: Output) -> bool:
        tx = request_for(request) or request_for(request, late=True)
        lines = [clean_text(line.text) for line in output.lines]
        if tx is None:
            log.warning(
                "channel 1: %s output (terminal %s, request %s, from %s) matches no request",
                output.target,
                request.terminal_id or "-",
                request.request_id,
                request.peer_host or "-",
            )
            # A display text with nothing open is harmless; a receipt we cannot keep is not.
            return output.target not in RECEIPT_TARGETS
        DeviceMessage.objects.create(
            transaction=tx,
            seq=tx.device_messages.count(),
            target=clean_text(output.target, 32),
            lines=lines,
        )
        return True

    def _delivery_allowed(self, request: DeviceRequest) -> bool:
        tx = request_for(request)
        if tx is None or tx.operation != Operation.AUTHORISE or tx.session_id is None:
            return False
        return delivery_check(tx.session_id)(request)
