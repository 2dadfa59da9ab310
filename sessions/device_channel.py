"""Channel 1 through the database, for the "POS listens" arrangement with many workers.

The long-running device-channel service (`manage.py device_channel`) accepts channel-1
connections from every terminal. Each DeviceRequest belongs to the request currently open on
that terminal, which is the newest TerminalTransaction row still SENT (written before the
worker sent it, and the lease guarantees there is only one). Receipts and display texts are
stored against it; DeliveryBox is decided from the database exactly as the worker would.
"""

from __future__ import annotations

import logging

from django.db import close_old_connections

from sessions.journal import clean_text
from sessions.models import DeviceMessage, Operation, TerminalTransaction, TxState
from sessions.services import delivery_check
from terminals.opi.device_channel import RecordingDeviceHandler
from terminals.opi.messages import RECEIPT_TARGETS, DeviceRequest, Output

log = logging.getLogger(__name__)


def open_transaction_for(terminal_id: str | None) -> TerminalTransaction | None:
    if not terminal_id:
        return None
    return (
        TerminalTransaction.objects.filter(terminal__terminal_id=terminal_id, state=TxState.SENT)
        .select_related("session")
        .order_by("-id")
        .first()
    )


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
        tx = open_transaction_for(request.terminal_id)
        lines = [clean_text(line.text) for line in output.lines]
        if tx is None:
            log.warning(
                "channel 1: %s output from terminal %s with no open request",
                output.target,
                request.terminal_id,
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
        tx = open_transaction_for(request.terminal_id)
        if tx is None or tx.operation != Operation.AUTHORISE or tx.session_id is None:
            return False
        return delivery_check(tx.session_id)(request)
