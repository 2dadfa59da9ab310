"""The terminal fleet: sites, IM30 terminals, the connectors they serve, status and brands."""

import hashlib
import json
import re
import secrets
import uuid
from datetime import timedelta
from zoneinfo import available_timezones

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy

from evpay.validation import validate_vat_number
from terminals.opi.profile import TerminalProfile

TIME_ZONE_CHOICES = sorted((tz, tz) for tz in available_timezones() if "/" in tz)


class Site(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120, unique=True)
    address = models.TextField(blank=True)
    time_zone = models.CharField(
        max_length=64, choices=TIME_ZONE_CHOICES, default="Europe/Amsterdam"
    )
    currency = models.CharField(max_length=3, default="EUR")

    # What a receipt must say about the seller (issue #17): the operator's legal entity, which
    # may differ from the site's name and location address, and its VAT number.
    legal_name = models.CharField(
        gettext_lazy("legal name"),
        max_length=200,
        blank=True,
        help_text=gettext_lazy("Operator's legal name on receipts (site name if empty)"),
    )
    legal_address = models.TextField(
        gettext_lazy("legal address"),
        blank=True,
        help_text=gettext_lazy("Operator's registered address on receipts (site address if empty)"),
    )
    vat_number = models.CharField(
        gettext_lazy("VAT number"), max_length=20, blank=True, validators=[validate_vat_number]
    )
    receipt_prefix = models.CharField(
        gettext_lazy("receipt prefix"),
        max_length=12,
        blank=True,
        help_text=gettext_lazy(
            "Receipt numbers read PREFIX-000001 (S<site id> if empty); change only "
            "before the first receipt"
        ),
    )
    # The last receipt number issued at this site; sessions.receipts.issue_receipt increments
    # it under a row lock, so numbers are sequential without gaps or repeats.
    receipt_counter = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def receipt_name(self) -> str:
        return self.legal_name or self.name

    @property
    def receipt_address(self) -> str:
        return self.legal_address or self.address


class TerminalStatus(models.TextChoices):
    # CCV's documented states, plus OFFLINE when we cannot reach the terminal at all.
    IDLE = "IDLE", gettext_lazy("Idle")
    READY = "READY", gettext_lazy("Ready")
    BUSY = "BUSY", gettext_lazy("Busy")
    REPRINT_TICKET = "REPRINT_TICKET", gettext_lazy("Reprint ticket")
    LOGGED_OUT = "LOGGED_OUT", gettext_lazy("Logged out")
    LOCKED = "LOCKED", gettext_lazy("Locked")
    INOPERABLE = "INOPERABLE", gettext_lazy("Inoperable")
    UNKNOWN = "UNKNOWN", gettext_lazy("Unknown")
    # It answers, but tells no state: it refused the status request, or its profile polls it
    # with Login because it has no Diagnosis. Not offline: offline means no answer at all.
    REACHABLE = "REACHABLE", gettext_lazy("Reachable, no status")
    OFFLINE = "OFFLINE", gettext_lazy("Offline")


# Not online: no answer we can trust. UNKNOWN (the default until the first status poll, or a
# state we cannot map) is not OFFLINE, which only consecutive unanswered polls set: the overview
# counts the two apart, and only OFFLINE raises the "terminal offline" incident.
NOT_ONLINE_STATUSES = (TerminalStatus.OFFLINE, TerminalStatus.UNKNOWN)


class Terminal(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    terminal_id = models.CharField("CCV terminal id", max_length=16, unique=True)
    name = models.CharField(max_length=120)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="terminals")
    host = models.CharField(max_length=255)
    # TerminalProfile.to_dict(): ports, channel-1 arrangement, ids, timeouts, request types.
    profile = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)

    status = models.CharField(
        max_length=16, choices=TerminalStatus.choices, default=TerminalStatus.UNKNOWN
    )
    status_changed_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    brands_refreshed_at = models.DateTimeField(null=True, blank=True)

    # RequestIDs for this terminal's workstation: digits, at most 9 (OPI-NL). Incremented
    # atomically in the database so every process and host gets a distinct one.
    request_counter = models.PositiveBigIntegerField(default=0)

    # Lease serialising access to the terminal across all workers and hosts (one request at a
    # time per terminal). Claimed by a conditional UPDATE; expires so a crashed holder frees it.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["site__name", "name"]
        indexes = [models.Index(fields=["status"], name="terminal_status")]

    def __str__(self):
        return f"{self.name} ({self.terminal_id})"

    # --- protocol profile -------------------------------------------------------------
    def opi_profile(self) -> TerminalProfile:
        """The validated protocol profile; parsed once per row state, not on every call
        (one request asks for it several times: timeout, workstation id, client)."""
        data = {**(self.profile or {}), "host": self.host}
        key = json.dumps(data, sort_keys=True)
        cached = getattr(self, "_opi_profile_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, TerminalProfile.from_dict(data))
            self._opi_profile_cache = cached
        return cached[1]

    @property
    def workstation_id(self) -> str:
        return self.opi_profile().workstation_id

    def next_request_id(self) -> str:
        """A fresh RequestID, unique for this terminal; committed before it is used."""
        with transaction.atomic():
            Terminal.objects.filter(pk=self.pk).update(request_counter=F("request_counter") + 1)
            value = Terminal.objects.values_list("request_counter", flat=True).get(pk=self.pk)
        # Nine digits at most; wrapping after a billion requests is harmless because the
        # (terminal, workstation, request id) unique constraint still guards duplicates.
        return str(value % 1_000_000_000 or 1)

    # --- lease --------------------------------------------------------------------------
    def try_lease(self, owner: str, seconds: float) -> bool:
        now = timezone.now()
        claimed = (
            Terminal.objects.filter(pk=self.pk)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=owner))
            .update(lease_owner=owner, lease_until=now + timedelta(seconds=seconds))
        )
        return claimed == 1

    def release_lease(self, owner: str) -> None:
        Terminal.objects.filter(pk=self.pk, lease_owner=owner).update(
            lease_owner="", lease_until=None
        )

    @property
    def is_online(self) -> bool:
        return self.status not in NOT_ONLINE_STATUSES


# What a charge point's identity (the last segment of its OCPP URL) may be: the OCPP 2.0.1
# security whitepaper's identifier characters, at most 48 (1.6 chargeBoxIdentity is 20, but
# real chargers use their serial numbers, which are longer).
CHARGE_POINT_IDENTITY = re.compile(r"^[A-Za-z0-9*\-_=:+|@.]{1,48}$")


def validate_charge_point_identity(value: str) -> None:
    if not CHARGE_POINT_IDENTITY.match(value or ""):
        raise ValidationError(
            "1 to 48 characters: letters, digits and * - _ = : + | @ . (no spaces or slashes)"
        )


class OcppVersion(models.TextChoices):
    V16 = "1.6", "OCPP 1.6J"
    V201 = "2.0.1", "OCPP 2.0.1"


class ChargePoint(models.Model):
    """A charger that connects to evpay over OCPP (evpay is its central system)."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    identity = models.CharField(
        "charge point id",
        max_length=48,
        unique=True,
        validators=[validate_charge_point_identity],
        help_text="The last part of its URL: ws://host:port/ocpp/<charge point id>",
    )
    name = models.CharField(max_length=120, blank=True)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="charge_points")
    enabled = models.BooleanField(default=True)
    # Security profile 1/2: HTTP Basic on the upgrade. Only a SHA-256 of the password is kept;
    # passwords are generated (ChargePoint.set_new_password, 192 random bits), never chosen, so
    # a fast hash is enough, as for API keys.
    password_hash = models.CharField(max_length=64, blank=True, editable=False)
    password_set_at = models.DateTimeField(null=True, blank=True, editable=False)

    # What the charger told us (BootNotification) and the state of its connection. Written by
    # the OCPP server only.
    ocpp_version = models.CharField(max_length=8, choices=OcppVersion.choices, blank=True)
    vendor = models.CharField(max_length=50, blank=True)
    model = models.CharField(max_length=50, blank=True)
    serial_number = models.CharField(max_length=50, blank=True)
    firmware_version = models.CharField(max_length=50, blank=True)
    booted_at = models.DateTimeField(null=True, blank=True)
    connected = models.BooleanField(default=False)
    # The ocpp_server process holding the socket ("host:pid:nonce"): the one that sends its
    # commands (sessions.ocpp.commands). Empty when no process holds it.
    connected_to = models.CharField(max_length=100, blank=True)
    connected_at = models.DateTimeField(null=True, blank=True)
    # Renewed by the holding process every few seconds: a holder that died without saying so
    # (killed, host gone) lets this lapse, and any other OCPP server then marks the charger
    # disconnected (sessions.ocpp.server).
    held_until = models.DateTimeField(null=True, blank=True)
    last_message_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["identity"]

    def __str__(self):
        return self.identity

    @staticmethod
    def hash_password(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    def set_new_password(self) -> str:
        """Generate, store (hashed) and return a new password: shown once, never logged.
        32 characters: within OCPP 2.0.1's 16..40 and printable for 1.6 AuthorizationKey."""
        raw = secrets.token_urlsafe(24)
        self.password_hash = self.hash_password(raw)
        self.password_set_at = timezone.now()
        self.save(update_fields=["password_hash", "password_set_at"])
        return raw

    def check_password(self, raw: str) -> bool:
        if not self.password_hash:
            return False
        return secrets.compare_digest(self.password_hash, self.hash_password(raw))


class Connector(models.Model):
    """A connector / EVSE served by a terminal (one IM30 can serve several)."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    terminal = models.ForeignKey(Terminal, on_delete=models.PROTECT, related_name="connectors")
    evse_id = models.CharField("EVSE id", max_length=48, unique=True)
    label = models.CharField(max_length=60, help_text="What the driver sees, e.g. 'Left, 22 kW'")
    enabled = models.BooleanField(default=True)

    # The OCPP charger this connector belongs to, if it speaks OCPP: 1.6 numbers connectors
    # (connectorId 1..n); 2.0.1 numbers EVSEs (evseId) and the connectors on each.
    charge_point = models.ForeignKey(
        ChargePoint,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="connectors",
    )
    ocpp_connector_id = models.PositiveSmallIntegerField(
        "OCPP connector id",
        null=True,
        blank=True,
        help_text="1.6 connectorId; on 2.0.1 the connector on the EVSE (usually 1)",
    )
    ocpp_evse_id = models.PositiveSmallIntegerField(
        "OCPP EVSE id", null=True, blank=True, help_text="2.0.1 evseId"
    )
    # The status the charger last reported (StatusNotification), verbatim.
    ocpp_status = models.CharField(max_length=20, blank=True)
    ocpp_status_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["evse_id"]
        constraints = [
            # sessions.ocpp finds a connector by (charger, 1.6 connectorId) or (charger,
            # 2.0.1 evseId): each must name one connector.
            models.UniqueConstraint(
                fields=["charge_point", "ocpp_connector_id"],
                condition=Q(ocpp_evse_id__isnull=True),
                name="connector_one_per_ocpp_connector",
            ),
            models.UniqueConstraint(
                fields=["charge_point", "ocpp_evse_id"],
                name="connector_one_per_ocpp_evse",
            ),
        ]

    def __str__(self):
        return f"{self.evse_id} ({self.label})"

    def clean(self):
        if self.charge_point_id and self.ocpp_connector_id is None and self.ocpp_evse_id is None:
            raise ValidationError(
                "A connector of an OCPP charger needs its OCPP connector id (1.6) or EVSE id "
                "(2.0.1)."
            )
        if self.charge_point_id and self.charge_point.site_id != self.terminal.site_id:
            raise ValidationError("The charger and the terminal must be on the same site.")


class TerminalBrand(models.Model):
    terminal = models.ForeignKey(Terminal, on_delete=models.CASCADE, related_name="brands")
    code = models.CharField(max_length=16)  # CardCircuit code: VISA, ECMC, MAES, ...
    display_name = models.CharField(max_length=60, blank=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.UniqueConstraint(fields=["terminal", "code"], name="terminal_brand_unique")
        ]

    def __str__(self):
        return self.code


class TerminalStatusChange(models.Model):
    terminal = models.ForeignKey(Terminal, on_delete=models.CASCADE, related_name="status_changes")
    at = models.DateTimeField(default=timezone.now)
    from_status = models.CharField(max_length=16, choices=TerminalStatus.choices)
    to_status = models.CharField(max_length=16, choices=TerminalStatus.choices)
    detail = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["terminal", "-at"], name="status_change_terminal_at")]

    def __str__(self):
        return f"{self.terminal_id}: {self.from_status} -> {self.to_status}"


class PeriodClosing(models.Model):
    """A terminal's period closing (ReconciliationWithClosure) reconciled against our captures."""

    class State(models.TextChoices):
        PENDING = "pending", gettext_lazy("Pending")
        MATCHED = "matched", gettext_lazy("Matched")
        MISMATCH = "mismatch", gettext_lazy("Mismatch")
        # The terminal answered the closing but reported no totals: nothing to compare, which
        # is not the same as totals of zero.
        UNVERIFIED = "unverified", gettext_lazy("Unverified: the terminal reported no totals")
        FAILED = "failed", gettext_lazy("Failed")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    terminal = models.ForeignKey(Terminal, on_delete=models.PROTECT, related_name="closings")
    business_date = models.DateField(help_text="local date of the site when the closing ran")
    # Our captures counted are those completed in (period_start, period_end].
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    triggered_by = models.CharField(max_length=150, default="schedule")
    request_id = models.CharField(max_length=9, blank=True)
    raw_response = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-period_end", "-id"]
        indexes = [models.Index(fields=["terminal", "-period_end"], name="closing_terminal_end")]

    def __str__(self):
        return f"closing {self.terminal_id} {self.business_date} {self.state}"


class ClosingBrandTotal(models.Model):
    """Per brand and currency: the terminal's totals next to ours."""

    closing = models.ForeignKey(PeriodClosing, on_delete=models.CASCADE, related_name="totals")
    brand = models.CharField(max_length=16)
    currency = models.CharField(max_length=3)
    terminal_count = models.PositiveIntegerField(default=0)
    terminal_amount_minor = models.BigIntegerField(default=0)
    our_count = models.PositiveIntegerField(default=0)
    our_amount_minor = models.BigIntegerField(default=0)
    # Our captures that make up our side, and notes on what explains a difference.
    transaction_ids = models.JSONField(default=list, blank=True)
    explanation = models.TextField(blank=True)

    class Meta:
        ordering = ["brand", "currency"]
        constraints = [
            models.UniqueConstraint(
                fields=["closing", "brand", "currency"], name="closing_total_unique"
            )
        ]

    def __str__(self):
        return f"{self.brand} {self.currency}"

    @property
    def matches(self) -> bool:
        return (self.terminal_count, self.terminal_amount_minor) == (
            self.our_count,
            self.our_amount_minor,
        )

    @property
    def count_difference(self) -> int:
        return self.terminal_count - self.our_count

    @property
    def amount_difference_minor(self) -> int:
        return self.terminal_amount_minor - self.our_amount_minor


class MifareRead(models.Model):
    """An operator's request to read a Mifare card's UID at a terminal, and its result."""

    class State(models.TextChoices):
        PENDING = "pending", gettext_lazy("Waiting for a card")
        DONE = "done", gettext_lazy("Read")
        FAILED = "failed", gettext_lazy("Failed")

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    terminal = models.ForeignKey(Terminal, on_delete=models.CASCADE, related_name="mifare_reads")
    requested_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(auto_now_add=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    uid = models.CharField(max_length=32, blank=True)
    detail = models.CharField(max_length=300, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self):
        return f"mifare {self.terminal_id} {self.state} {self.uid}"
