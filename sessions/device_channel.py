"""Channel 1 through the database, for the "POS listens" arrangement with many workers.

The long-running device-channel service (`manage.py device_channel`) accepts channel-1
connections from every terminal. Each DeviceRequest belongs to the request currently open on
that terminal, which is the newest TerminalTransaction row still SENT (written before the
worker sent it, and the lease guarantees there is only one). Receipts and display texts are
stored against it; DeliveryBox is decided from the database exactly as the worker would.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import socket
import time
from datetime import timedelta

from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import Max, Subquery
from django.db.models.functions import Coalesce
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
    # Every output of every DeviceRequest looks its request up: the terminal (source check,
    # grace) comes with the row.
    rows = rows.select_related("terminal").order_by("-id")
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


def source_allowed(terminal: Terminal, peer_host: str | None) -> bool:
    """Whether a channel-1 message from `peer_host` may speak for `terminal`: its profile's
    `channel1_sources` (addresses, networks, host names), else the terminal's own host."""
    try:
        peer = ipaddress.ip_address(peer_host or "")
    except ValueError:
        return False
    if peer.version == 6 and peer.ipv4_mapped:
        peer = peer.ipv4_mapped
    for source in terminal.opi_profile().channel1_sources or [terminal.host]:
        try:
            if peer in ipaddress.ip_network(source, strict=False):
                return True
        except ValueError:  # a host name
            if str(peer) in _addresses(source, int(time.monotonic() // _RESOLVE_SECONDS)):
                return True
    return False


# Host names in profiles are looked up again after this long (a terminal's DHCP lease moves).
_RESOLVE_SECONDS = 300


@functools.lru_cache(maxsize=512)
def _addresses(name: str, _period: int) -> frozenset[str]:
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return frozenset()
    return frozenset(str(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos)


def accepted_request_for(request: DeviceRequest, *, late: bool = False):
    """`request_for`, refused unless the message comes from that terminal's address and names
    the request's workstation (when it names one): a forged DeviceRequest from elsewhere on the
    network never reaches a receipt or answers a DeliveryBox."""
    tx = request_for(request, late=late)
    if tx is None:
        return None
    if not source_allowed(tx.terminal, request.peer_host):
        _refused(request, tx, f"it came from {request.peer_host or 'an unknown address'}")
        return None
    if request.workstation_id and tx.workstation_id and request.workstation_id != tx.workstation_id:
        _refused(request, tx, f"it names workstation {request.workstation_id!r}")
        return None
    return tx


def _refused(request: DeviceRequest, tx: TerminalTransaction, why: str) -> None:
    log.warning(
        "channel 1: %s message for terminal %s refused: %s, not the terminal's own",
        clean_text(request.request_type or "?", 32),
        tx.terminal.terminal_id,
        clean_text(why, 120),
    )


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
        tx = accepted_request_for(request) or accepted_request_for(request, late=True)
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
        _store_message(tx, clean_text(output.target, 32), lines)
        return True

    def _delivery_allowed(self, request: DeviceRequest) -> bool:
        tx = accepted_request_for(request)
        if tx is None or tx.operation != Operation.AUTHORISE or tx.session_id is None:
            return False
        return delivery_check(tx.session_id)(request)


def _store_message(tx: TerminalTransaction, target: str, lines: list[str]) -> None:
    """The next message of `tx`: its sequence number computed in the INSERT itself, one
    statement instead of a row lock, a read and a write (every output of every terminal comes
    through here). Two messages at once (two connections of one terminal) may compute the
    same number: the unique constraint refuses the second, which takes the next one; the real
    receipt is never the one lost."""
    following = Subquery(
        DeviceMessage.objects.filter(transaction=tx)
        .values("transaction")
        .annotate(last=Max("seq"))
        .values("last")
    )
    for attempt in range(5):
        try:
            with transaction.atomic():
                DeviceMessage.objects.create(
                    transaction=tx,
                    seq=Coalesce(following + 1, 0),
                    target=target,
                    lines=lines,
                )
            return
        except IntegrityError:
            if attempt == 4:
                raise
