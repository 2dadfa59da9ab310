"""Charging sessions and their payments.

Money is integer minor units plus the session's currency. Terminal requests about money are
TerminalTransaction rows written (state SENT) and committed before a byte goes to the terminal.
"""

import hashlib
import secrets
import uuid
from datetime import timedelta

from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy

from evpay import audit
from terminals.models import ChargePoint, Connector, Site, Terminal
from terminals.opi.messages import RECEIPT_TARGETS, OutDeviceTarget


class Tariff(models.Model):
    """Prices include VAT. Amounts are minor units of the site's currency."""

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="tariffs")
    name = models.CharField(max_length=120)
    active = models.BooleanField(default=True)
    start_fee_minor = models.PositiveIntegerField(default=0)
    price_per_kwh_minor = models.PositiveIntegerField(help_text="minor units per kWh, VAT incl.")
    price_per_minute_minor = models.PositiveIntegerField(default=0, help_text="while plugged in")
    idle_fee_per_minute_minor = models.PositiveIntegerField(default=0)
    idle_grace_minutes = models.PositiveIntegerField(default=30)
    vat_rate_bp = models.PositiveIntegerField("VAT rate (basis points)", default=2100)
    authorise_amount_minor = models.PositiveIntegerField(help_text="amount reserved at start")
    max_session_minutes = models.PositiveIntegerField(default=12 * 60)
    start_timeout_minutes = models.PositiveIntegerField(
        default=10, help_text="release the reservation if charging has not started by then"
    )

    class Meta:
        ordering = ["site__name", "name"]
        constraints = [
            # services.current_tariff() relies on at most one active tariff per site.
            models.UniqueConstraint(
                fields=["site"], condition=Q(active=True), name="tariff_one_active_per_site"
            ),
            models.CheckConstraint(
                condition=Q(authorise_amount_minor__gt=0), name="tariff_authorise_positive"
            ),
            models.CheckConstraint(condition=Q(vat_rate_bp__lte=10000), name="tariff_vat_le_100"),
        ]

    def __str__(self):
        return f"{self.site}: {self.name}"

    @property
    def currency(self) -> str:
        return self.site.currency

    def snapshot(self) -> dict:
        """The prices a session is held to, copied at start so later edits do not reprice it."""
        fields = [
            "start_fee_minor",
            "price_per_kwh_minor",
            "price_per_minute_minor",
            "idle_fee_per_minute_minor",
            "idle_grace_minutes",
            "vat_rate_bp",
            "authorise_amount_minor",
            "max_session_minutes",
            "start_timeout_minutes",
        ]
        return {"tariff_id": self.pk, "name": self.name, "currency": self.currency} | {
            f: getattr(self, f) for f in fields
        }


class SessionState(models.TextChoices):
    AUTHORISING = "authorising", gettext_lazy("Authorising")
    AUTHORISED = "authorised", gettext_lazy("Authorised, waiting for charging")
    CHARGING = "charging", gettext_lazy("Charging")
    STOPPING = "stopping", gettext_lazy("Stop requested")
    ENDED = "ended", gettext_lazy("Charging ended, plugged in")
    SETTLING = "settling", gettext_lazy("Settling payment")
    CLOSED = "closed", gettext_lazy("Closed")


OPEN_STATES = [s for s in SessionState if s != SessionState.CLOSED]


class CloseReason(models.TextChoices):
    CAPTURED = "captured", gettext_lazy("Captured")
    RELEASED = "released", gettext_lazy("Reservation released")
    DECLINED = "declined", gettext_lazy("Card declined")
    ABORTED = "aborted", gettext_lazy("Aborted by the driver")
    TIMED_OUT = "timed_out", gettext_lazy("No card presented")
    NOT_DELIVERED = "not_delivered", gettext_lazy("Connector no longer available")
    FAILED = "failed", gettext_lazy("Failed")
    RESOLVED_MANUALLY = "resolved_manually", gettext_lazy("Resolved by staff")


class ChargingSession(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    connector = models.ForeignKey(Connector, on_delete=models.PROTECT, related_name="sessions")
    terminal = models.ForeignKey(Terminal, on_delete=models.PROTECT, related_name="sessions")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="sessions")
    state = models.CharField(max_length=16, choices=SessionState.choices)
    close_reason = models.CharField(max_length=20, choices=CloseReason.choices, blank=True)
    close_detail = models.CharField(max_length=300, blank=True)
    stop_reason = models.CharField(max_length=120, blank=True)
    started_by = models.CharField(max_length=150, blank=True)  # API key / actor label

    requested_at = models.DateTimeField(default=timezone.now)
    authorised_at = models.DateTimeField(null=True, blank=True)
    charging_started_at = models.DateTimeField(null=True, blank=True)
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    charging_ended_at = models.DateTimeField(null=True, blank=True)
    unplugged_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    authorisation_expires_at = models.DateTimeField(null=True, blank=True)

    energy_wh = models.PositiveBigIntegerField(default=0)
    meter_updated_at = models.DateTimeField(null=True, blank=True)

    currency = models.CharField(max_length=3)
    tariff = models.JSONField(default=dict)  # Tariff.snapshot() at start
    authorised_amount_minor = models.PositiveIntegerField(default=0)
    cost_start_minor = models.PositiveIntegerField(default=0)
    cost_energy_minor = models.PositiveIntegerField(default=0)
    cost_time_minor = models.PositiveIntegerField(default=0)
    cost_idle_minor = models.PositiveIntegerField(default=0)
    cost_total_minor = models.PositiveIntegerField(default=0)
    cost_vat_minor = models.PositiveIntegerField(default=0)
    cost_capped = models.BooleanField(default=False)
    captured_amount_minor = models.PositiveIntegerField(default=0)

    # What the terminal told us about the card: never a full card number.
    card_brand = models.CharField(max_length=16, blank=True)
    masked_pan = models.CharField(max_length=32, blank=True)
    pan_last4 = models.CharField(max_length=4, blank=True, db_index=True)
    card_token = models.CharField(max_length=64, blank=True, db_index=True)
    card_par = models.CharField(max_length=64, blank=True, db_index=True)

    # OCPP (a connector of an OCPP charger): the idTag / idToken we issue when the reservation
    # is approved (it names this session to the charger, nothing about the card), the charger's
    # transaction id, and the meter register at the transaction's start (energy = register -
    # start).
    ocpp_id_tag = models.CharField(max_length=20, blank=True)
    ocpp_transaction_id = models.CharField(max_length=36, blank=True)
    ocpp_meter_start_wh = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            # services.start_session relies on this to refuse a second session per connector.
            models.UniqueConstraint(
                fields=["connector"],
                condition=~Q(state="closed"),
                name="session_one_open_per_connector",
            ),
            models.CheckConstraint(
                condition=Q(captured_amount_minor__lte=F("authorised_amount_minor")),
                name="session_capture_le_authorised",
            ),
            # sessions.ocpp finds the session of an idTag / transaction by these.
            models.UniqueConstraint(
                fields=["ocpp_id_tag"], condition=~Q(ocpp_id_tag=""), name="session_ocpp_id_tag"
            ),
            models.UniqueConstraint(
                fields=["connector", "ocpp_transaction_id"],
                condition=~Q(ocpp_transaction_id=""),
                name="session_ocpp_transaction",
            ),
            models.CheckConstraint(
                condition=Q(cost_total_minor__lte=F("authorised_amount_minor"))
                | Q(authorised_amount_minor=0),
                name="session_cost_le_authorised",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "-requested_at"], name="session_state_requested"),
            models.Index(fields=["site", "-requested_at"], name="session_site_requested"),
            models.Index(fields=["terminal", "-requested_at"], name="session_terminal_requested"),
            # The session list's default order (views.session_queryset: -requested_at, -id),
            # also the admin changelist's: without it the first page sorted all sessions
            # (a sequential scan; benchmarks/staff_pages.py).
            models.Index(fields=["-requested_at", "-id"], name="session_requested"),
            # The list sorted by total (SORTS["total"], tie-broken by id).
            models.Index(fields=["-cost_total_minor", "-id"], name="session_total"),
            # The list's other sorts (views.SORTS): each pages by keyset on (column, id)
            # (evpay.web.KeysetOrder), read in either direction from its index. closed_at's
            # NULLs sort first when descending, PostgreSQL's order for this index.
            models.Index(fields=["-closed_at", "-id"], name="session_closed"),
            models.Index(fields=["-captured_amount_minor", "-id"], name="session_captured"),
            models.Index(fields=["-energy_wh", "-id"], name="session_energy"),
            models.Index(fields=["-state", "-id"], name="session_state_id"),
        ]

    def __str__(self):
        return f"session {self.public_id} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.state != SessionState.CLOSED

    def authorisation(self):
        """The approved authorisation transaction, if any."""
        return (
            self.transactions.filter(operation=Operation.AUTHORISE, outcome=Outcome.SUCCESS)
            .order_by("id")
            .first()
        )

    def last_authorisation_attempt(self):
        """The newest authorise request, whatever its outcome."""
        return self.transactions.filter(operation=Operation.AUTHORISE).order_by("-id").first()


class Operation(models.TextChoices):
    AUTHORISE = "authorise", gettext_lazy("Authorise")
    CARD_TOKEN = "card_token", gettext_lazy("Read card token")
    CAPTURE = "capture", gettext_lazy("Capture")
    RELEASE = "release", gettext_lazy("Release")
    RECOVERY = "recovery", gettext_lazy("Recovery (repeat last message)")
    REPRINT = "reprint", gettext_lazy("Ticket reprint")


MONEY_OPERATIONS = (Operation.AUTHORISE, Operation.CAPTURE, Operation.RELEASE)


class TxState(models.TextChoices):
    SENT = "sent", gettext_lazy("Sent (written before sending)")
    COMPLETED = "completed", gettext_lazy("Completed")
    UNKNOWN = "unknown", gettext_lazy("Outcome unknown")
    NOT_SENT = "not_sent", gettext_lazy("Not sent")
    RESOLVED = "resolved", gettext_lazy("Resolved by recovery")


class Outcome(models.TextChoices):
    PENDING = "pending", gettext_lazy("Pending")
    SUCCESS = "success", gettext_lazy("Approved / success")
    DECLINED = "declined", gettext_lazy("Declined")
    ABORTED = "aborted", gettext_lazy("Aborted")
    BUSY = "busy", gettext_lazy("Busy / unavailable")
    PRINT_LAST_TICKET = "print_last_ticket", gettext_lazy("Print last ticket first")
    UNKNOWN = "unknown", gettext_lazy("Unknown")
    NOT_SENT = "not_sent", gettext_lazy("Not sent")
    FAILED = "failed", gettext_lazy("Failed")
    NOT_COMPLETED = "not_completed", gettext_lazy("Proven not completed")


# How a request row's state may change (TerminalTransaction methods; nothing else writes it).
TX_ALLOWED = {
    TxState.SENT: {TxState.COMPLETED, TxState.UNKNOWN, TxState.NOT_SENT, TxState.RESOLVED},
    TxState.UNKNOWN: {TxState.UNKNOWN, TxState.RESOLVED},
    TxState.COMPLETED: set(),
    TxState.NOT_SENT: set(),
    TxState.RESOLVED: set(),
}

# Outcomes that occupy an authorisation: while one of these exists for a capture or release,
# no other capture or release may be sent for the same authorisation.
LIVE_SETTLEMENT_OUTCOMES = [Outcome.PENDING, Outcome.UNKNOWN, Outcome.SUCCESS]


class TerminalTransaction(models.Model):
    """One request sent to a terminal about money, written before it is sent."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    terminal = models.ForeignKey(Terminal, on_delete=models.PROTECT, related_name="transactions")
    session = models.ForeignKey(
        ChargingSession,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="transactions",
    )
    operation = models.CharField(max_length=16, choices=Operation.choices)
    workstation_id = models.CharField(max_length=32)
    request_id = models.CharField(max_length=9)
    # For capture/release: the authorisation; for recovery: the transaction being recovered;
    # for a resend: the attempt it replaces.
    original = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="followers"
    )
    amount_minor = models.PositiveIntegerField(default=0)
    # Upper bound copied from the authorisation, so the database refuses an over-capture.
    limit_minor = models.PositiveIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)

    state = models.CharField(max_length=12, choices=TxState.choices, default=TxState.SENT)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # When a SENT row becomes the recovery sweep's business (written before sending).
    deadline_at = models.DateTimeField()
    recovery_attempts = models.PositiveIntegerField(default=0)
    resolution = models.CharField(max_length=300, blank=True)

    overall_result = models.CharField(max_length=32, blank=True)
    # What the terminal gives and capture/release send back, stored in full: the protocol
    # library refuses an answer with longer identifiers (MAX_IDENTIFIER_LENGTH) rather than
    # letting a truncated STAN address the wrong reservation.
    stan = models.CharField(max_length=64, blank=True)
    approval_code = models.CharField(max_length=64, blank=True)
    terminal_timestamp = models.CharField(max_length=64, blank=True)
    response_terminal_id = models.CharField(max_length=64, blank=True)
    card_brand = models.CharField(max_length=16, blank=True)
    masked_pan = models.CharField(max_length=32, blank=True)
    card_token = models.CharField(max_length=64, blank=True)
    card_par = models.CharField(max_length=64, blank=True)
    action_code = models.CharField(max_length=16, blank=True)
    return_code = models.CharField(max_length=16, blank=True)
    error_code = models.CharField(max_length=32, blank=True)
    error_text = models.CharField(max_length=300, blank=True)
    detail = models.CharField(max_length=300, blank=True)  # our own note (why unknown, etc.)
    # Free text the terminal put in PrivateData (firmware notes, refusal reasons), verbatim.
    terminal_text = models.TextField(blank=True)
    raw_request = models.TextField(blank=True)
    raw_response = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["terminal", "workstation_id", "request_id"],
                name="tx_unique_request_id",
            ),
            # Double capture is impossible: one live (pending/unknown/succeeded) capture or
            # release per authorisation. services.settlement.settle_session relies on this.
            models.UniqueConstraint(
                fields=["original"],
                condition=Q(operation__in=["capture", "release"])
                & Q(outcome__in=["pending", "unknown", "success"]),
                name="tx_one_live_settlement_per_auth",
            ),
            # One live (pending/unknown/approved) reservation per session: a retried or
            # duplicated authorise task can never reserve twice. services.authorise_session
            # relies on this.
            models.UniqueConstraint(
                fields=["session"],
                condition=Q(operation="authorise")
                & Q(outcome__in=["pending", "unknown", "success"]),
                name="tx_one_live_authorisation_per_session",
            ),
            models.CheckConstraint(
                condition=Q(limit_minor__isnull=True) | Q(amount_minor__lte=F("limit_minor")),
                name="tx_amount_le_limit",
            ),
            models.CheckConstraint(
                condition=~Q(operation__in=["capture", "release"]) | Q(original__isnull=False),
                name="tx_settlement_has_authorisation",
            ),
        ]
        indexes = [
            # The recovery sweep: rows still SENT or UNKNOWN.
            models.Index(
                fields=["deadline_at"],
                condition=Q(state__in=["sent", "unknown"]),
                name="tx_unresolved_due",
            ),
            models.Index(fields=["terminal", "-created_at"], name="tx_terminal_created"),
        ]

    def __str__(self):
        return f"{self.operation} #{self.request_id} on {self.terminal_id}: {self.outcome}"

    # --- state: every change of state or outcome is one of these calls -----------------
    def record_answer(self, outcome: str, actor, **answer) -> bool:
        """The terminal answered (or proved it had nothing: not sent, or unknown)."""
        to = {Outcome.UNKNOWN: TxState.UNKNOWN, Outcome.NOT_SENT: TxState.NOT_SENT}.get(
            outcome, TxState.COMPLETED
        )
        answer = {"outcome": outcome, "completed_at": timezone.now(), **answer}
        reason = answer.get("error_text") or answer.get("detail") or ""
        # A RepeatLastMessage's own answer is not recovery's finding ("tx.recovery").
        action = (
            "tx.repeat_last_message"
            if self.operation == Operation.RECOVERY
            else (f"tx.{self.operation}")
        )
        return self._move(to, answer, actor, action, reason, TxState.SENT)

    def resolve_by_recovery(self, outcome: str, resolution: str, actor, **answer) -> bool:
        """Recovery proved what happened: done (the repeated answer) or never completed."""
        fields = {"outcome": outcome, "resolution": resolution[:300], **answer}
        return self._move(
            TxState.RESOLVED, self._recovery_attempt(fields), actor, "tx.recovery", resolution
        )

    def remain_unknown(self, actor) -> bool:
        """Recovery asked and could not prove anything this time."""
        fields = self._recovery_attempt({"outcome": Outcome.UNKNOWN})
        return self._move(TxState.UNKNOWN, fields, actor, "tx.recovery", "could not be proven yet")

    def close_unanswered(self) -> bool:
        """A card read or reprint without a stored answer: nothing to recover."""
        resolution = "no answer stored; no money involved, nothing to recover"
        fields = {
            "outcome": Outcome.UNKNOWN,
            "resolution": resolution,
            "completed_at": self.completed_at or timezone.now(),
        }
        return self._move(TxState.RESOLVED, fields)

    def resolve_manually(self, user, note: str, actor) -> bool:
        """Staff settled it on their word (acquirer portal, journal): the outcome stays as
        recorded, the row stops blocking the terminal and recovery leaves it alone."""
        fields = {
            "resolution": f"resolved manually by {user.get_username()}: {note}"[:300],
            "completed_at": self.completed_at or timezone.now(),
        }
        return self._move(
            TxState.RESOLVED,
            fields,
            actor,
            "tx.resolved_manually",
            note,
            audit_from=self.state,
            audit_to=TxState.RESOLVED,
        )

    def _recovery_attempt(self, fields: dict) -> dict:
        return {
            "recovery_attempts": self.recovery_attempts + 1,
            "completed_at": self.completed_at or timezone.now(),
            **fields,
        }

    def _move(
        self,
        to: str,
        fields: dict,
        actor=None,
        action: str = "",
        reason: str = "",
        audit_from: str = "",
        audit_to: str = "",
    ) -> bool:
        """Apply one edge of TX_ALLOWED if the row is still in the state it was read in.

        A conditional UPDATE: when another process moved the row first (a late answer after
        recovery settled it, two recoveries), this changes nothing, re-reads the row and
        returns False, so the caller goes on from what is really stored."""
        frm = self.state
        if to not in TX_ALLOWED[frm]:
            raise ValueError(f"a request that is {frm} cannot become {to}")
        from_outcome = self.outcome
        with transaction.atomic():
            if not TerminalTransaction.objects.filter(pk=self.pk, state=frm).update(
                state=to, **fields
            ):
                self.refresh_from_db()
                return False
            self.state = to
            for name, value in fields.items():
                setattr(self, name, value)
            if "recovery_attempts" in fields:  # an F() expression until read back
                self.refresh_from_db(fields=["recovery_attempts"])
            if actor is not None:
                audit.record(
                    actor,
                    self,
                    action,
                    from_state=audit_from or from_outcome,
                    to_state=audit_to or self.outcome,
                    reason=reason,
                    session=self.session,
                    data={"request_id": self.request_id, "amount_minor": self.amount_minor},
                )
        return True


class DeviceMessage(models.Model):
    """A channel-1 output (display text or receipt) that arrived during a transaction."""

    transaction = models.ForeignKey(
        TerminalTransaction, on_delete=models.CASCADE, related_name="device_messages"
    )
    seq = models.PositiveIntegerField()
    target = models.CharField(max_length=32)
    lines = models.JSONField(default=list)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["transaction", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["transaction", "seq"], name="device_message_seq")
        ]

    def __str__(self):
        return f"{self.target} ({len(self.lines)} lines)"

    @property
    def is_receipt(self) -> bool:
        return self.target in RECEIPT_TARGETS

    # O.P.I. device names for what staff call the two receipt copies.
    TARGET_LABELS = {
        OutDeviceTarget.PRINTER: "Merchant copy",
        OutDeviceTarget.PRINTER_RECEIPT: "Cardholder copy",
        OutDeviceTarget.CASHIER_DISPLAY: "Cashier display",
        OutDeviceTarget.CUSTOMER_DISPLAY: "Customer display",
        OutDeviceTarget.JOURNAL_PRINTER: "Journal copy",
        OutDeviceTarget.E_JOURNAL: "Electronic journal",
    }

    @property
    def target_label(self) -> str:
        return self.TARGET_LABELS.get(self.target, self.target)


class ApiKey(models.Model):
    """A charger controller's credential. Only a SHA-256 of the key is stored."""

    PREFIX_LENGTH = 8
    # How long a rotated key keeps working beside its replacement (admin action, command default).
    ROTATION_OVERLAP = timedelta(hours=24)

    name = models.CharField(max_length=120)
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="api_keys")
    prefix = models.CharField(max_length=PREFIX_LENGTH, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
    # Set by rotation (the old key keeps working for the overlap) or by staff; null: no expiry.
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["site__name", "name"]
        verbose_name = gettext_lazy("API key")

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw: str) -> str:
        # Keys are 256-bit random: a fast hash is enough (nothing to brute-force).
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def issue(cls, name: str, site: Site) -> tuple["ApiKey", str]:
        """Create a key and return it with the raw secret, shown once."""
        prefix = secrets.token_hex(cls.PREFIX_LENGTH // 2)
        raw = f"evp_{prefix}_{secrets.token_urlsafe(32)}"
        return cls.objects.create(name=name, site=site, prefix=prefix, key_hash=cls.hash(raw)), raw

    @classmethod
    def authenticate(cls, raw: str) -> "ApiKey | None":
        """The unrevoked key matching `raw`, expired or not (the caller refuses an expired one
        with its own message), or None."""
        parts = raw.split("_")
        if len(parts) < 3 or parts[0] != "evp":
            return None
        key = cls.objects.select_related("site").filter(prefix=parts[1], revoked=False).first()
        if key is None or not secrets.compare_digest(key.key_hash, cls.hash(raw)):
            return None
        return key

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    def rotate(self, overlap: timedelta) -> tuple["ApiKey", str]:
        """Issue a new key for the same name and site; this one keeps working for `overlap`
        (so the charger can be reconfigured without an outage), then expires. An earlier
        expiry already set is kept."""
        if self.revoked or self.is_expired():
            raise ValueError(f"API key {self} is revoked or expired: issue a new one instead")
        with transaction.atomic():
            new, raw = ApiKey.issue(self.name, self.site)
            until = timezone.now() + overlap
            if self.expires_at is None or self.expires_at > until:
                self.expires_at = until
                self.save(update_fields=["expires_at"])
        return new, raw


class IdempotencyRecord(models.Model):
    """The first answer to a POST with an Idempotency-Key; repeats get it back unchanged."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=120)
    fingerprint = models.CharField(max_length=64)  # method + path + body hash
    status_code = models.PositiveSmallIntegerField()
    body = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # The API's `idempotent` inserts the row first, in the view's transaction: a
            # concurrent repeat waits on this index until that commits, then replays it.
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_key_unique")
        ]
        # The purge task (charging.purge_idempotency_records) deletes by age.
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self):
        return self.key


class IssuedReceipt(models.Model):
    """The number a session's receipt carries: given once (sessions.receipts.issue_receipt),
    sequential per site, the same on every copy, format and language afterwards."""

    session = models.OneToOneField(
        ChargingSession, on_delete=models.PROTECT, related_name="issued_receipt"
    )
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="issued_receipts")
    number = models.PositiveBigIntegerField()
    issued_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["site", "number"]
        constraints = [
            # issue_receipt counts on the site's counter; this proves it never repeats a number.
            models.UniqueConstraint(fields=["site", "number"], name="receipt_number_per_site")
        ]

    def __str__(self):
        return self.label

    @property
    def label(self) -> str:
        prefix = self.site.receipt_prefix or f"S{self.site_id}"
        return f"{prefix}-{self.number:06d}"


class InvoiceRequest(models.Model):
    """A driver's request for an invoice in a company's name, for finance to act on."""

    class State(models.TextChoices):
        REQUESTED = "requested", gettext_lazy("Requested")
        SENT = "sent", gettext_lazy("Invoice sent")
        REFUSED = "refused", gettext_lazy("Refused")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    session = models.ForeignKey(
        ChargingSession, on_delete=models.PROTECT, related_name="invoice_requests"
    )
    company_name = models.CharField(gettext_lazy("company name"), max_length=200)
    vat_number = models.CharField(gettext_lazy("VAT number"), max_length=20)
    address = models.TextField(gettext_lazy("address"), max_length=500)
    email = models.EmailField(gettext_lazy("e-mail"))
    state = models.CharField(max_length=12, choices=State.choices, default=State.REQUESTED)
    created_at = models.DateTimeField(default=timezone.now)
    handled_at = models.DateTimeField(null=True, blank=True)
    handled_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The public form refuses a second open request; this makes it hold under a race.
            models.UniqueConstraint(
                fields=["session"],
                condition=Q(state="requested"),
                name="invoice_one_open_per_session",
            )
        ]
        # Finance's list: open requests first (the admin's default filter).
        indexes = [models.Index(fields=["state", "-created_at"], name="invoice_state_created")]

    def __str__(self):
        return f"invoice request {self.company_name} ({self.get_state_display()})"

    def mark(self, state: str, actor, note: str = "") -> bool:
        """Requested -> sent / refused, once: a conditional UPDATE, then the audit row."""
        if state not in (self.State.SENT, self.State.REFUSED):
            raise ValueError(f"an invoice request cannot be marked {state!r}")
        now = timezone.now()
        with transaction.atomic():
            claimed = InvoiceRequest.objects.filter(pk=self.pk, state=self.State.REQUESTED).update(
                state=state, handled_at=now, handled_by=actor.label[:150]
            )
            if not claimed:
                return False
            self.state, self.handled_at, self.handled_by = state, now, actor.label[:150]
            audit.record(
                actor,
                self,
                "invoice.handled",
                from_state=self.State.REQUESTED,
                to_state=state,
                reason=note,
                session=self.session,
            )
        return True


class OcppMessage(models.Model):
    """One OCPP message to or from a charger, as it went over the wire (like the raw O.P.I.
    messages of a terminal request): what the session page shows and what faults are traced by."""

    class Direction(models.TextChoices):
        IN = "in", "From the charger"
        OUT = "out", "To the charger"

    class Kind(models.TextChoices):
        CALL = "call", "Call"
        RESULT = "result", "Result"
        ERROR = "error", "Error"

    charge_point = models.ForeignKey(
        ChargePoint, on_delete=models.CASCADE, related_name="ocpp_messages"
    )
    session = models.ForeignKey(
        ChargingSession,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="ocpp_messages",
    )
    direction = models.CharField(max_length=3, choices=Direction.choices)
    kind = models.CharField(max_length=6, choices=Kind.choices)
    action = models.CharField(max_length=48)
    message_id = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    at = models.DateTimeField(default=timezone.now)
    # What we made of it when it was not applied as such: duplicate, late, unknown transaction.
    note = models.CharField(max_length=300, blank=True)
    # Set on the first copy of a replayable report (1.6: transaction + timestamp; 2.0.1:
    # transaction + seqNo): a replay finds the key taken and is answered but not applied.
    dedupe_key = models.CharField(max_length=120, blank=True)

    class Meta:
        ordering = ["at", "id"]
        constraints = [
            # sessions.ocpp.journey.first_report relies on this to apply a report once.
            models.UniqueConstraint(
                fields=["charge_point", "dedupe_key"],
                condition=~Q(dedupe_key=""),
                name="ocpp_message_once",
            )
        ]
        indexes = [
            models.Index(fields=["session", "at"], name="ocpp_message_session"),
            models.Index(fields=["charge_point", "-at"], name="ocpp_message_charger"),
        ]

    def __str__(self):
        return f"{self.direction} {self.action} {self.message_id}"


class OcppCommand(models.Model):
    """A command for a charger, queued in the database so any process (worker, web, another
    OCPP server) can give it: the ocpp_server process holding the charger's socket claims it,
    sends it and stores the answer."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent, waiting for the answer"
        ANSWERED = "answered", "Answered"
        FAILED = "failed", "Failed (error answer or connection lost)"
        EXPIRED = "expired", "Expired (not sent or not answered in time)"

    class Purpose(models.TextChoices):
        # What a session needs from the charger; "" for staff commands (Reset, ...).
        NONE = "", "—"
        START = "start", "Start the session's transaction"
        STOP = "stop", "Stop the session's transaction"

    LIVE_STATES = (State.PENDING, State.SENT)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    charge_point = models.ForeignKey(ChargePoint, on_delete=models.CASCADE, related_name="commands")
    session = models.ForeignKey(
        ChargingSession,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="ocpp_commands",
    )
    purpose = models.CharField(max_length=8, choices=Purpose.choices, blank=True)
    action = models.CharField(max_length=48)
    payload = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150, blank=True)
    # A pending command not sent by then expires (the charger is not connected).
    expires_at = models.DateTimeField()
    claimed_by = models.CharField(max_length=100, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    response = models.JSONField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    # Set by the guard (sessions.ocpp.commands) once the answer has been acted on.
    handled = models.BooleanField(default=False)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # One live start or stop per session: two processes reconciling the same session
            # (a charger moving between servers) cannot both queue one.
            models.UniqueConstraint(
                fields=["session", "purpose"],
                condition=Q(state__in=["pending", "sent"]) & ~Q(purpose=""),
                name="ocpp_command_one_live_per_purpose",
            )
        ]
        indexes = [
            # The holding process's poll: pending commands of its chargers, oldest first.
            models.Index(
                fields=["charge_point", "created_at"],
                condition=Q(state="pending"),
                name="ocpp_command_pending",
            ),
            models.Index(
                fields=["answered_at"],
                condition=Q(handled=False),
                name="ocpp_command_unhandled",
            ),
        ]

    def __str__(self):
        return f"{self.action} to {self.charge_point_id}: {self.state}"

    @property
    def accepted(self) -> bool:
        return self.state == self.State.ANSWERED and (self.response or {}).get("status") == (
            "Accepted"
        )
