from decimal import Decimal

from django import forms
from django.contrib import admin, messages

from evpay.admin import ReadOnlyAdmin, ReadOnlyInline
from evpay.money import exponent, format_money, to_decimal
from evpay.templatetags.evpay_tags import bp_percent
from sessions.models import (
    ApiKey,
    ChargingSession,
    DeviceMessage,
    IdempotencyRecord,
    InvoiceRequest,
    IssuedReceipt,
    OcppCommand,
    OcppMessage,
    Tariff,
    TerminalTransaction,
)

# Tariff prices: the table's minor-unit field -> the form's money field shown for it.
TARIFF_MONEY = {
    "start_fee_minor": "start_fee",
    "price_per_kwh_minor": "price_per_kwh",
    "price_per_minute_minor": "price_per_minute",
    "idle_fee_per_minute_minor": "idle_fee_per_minute",
    "authorise_amount_minor": "authorise_amount",
}


def _money_field(label: str, help_text: str = "", **kwargs) -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        min_value=0,
        # The largest ISO 4217 exponent; the site's own is checked in clean().
        decimal_places=3,
        help_text=help_text,
        **kwargs,
    )


class TariffForm(forms.ModelForm):
    """Prices as money of the site's currency and VAT as a percentage; the table keeps integer
    minor units and basis points (pricing works on those), converted here both ways."""

    start_fee = _money_field("Start fee", "charged once per session", initial=0)
    price_per_kwh = _money_field("Price per kWh")
    price_per_minute = _money_field("Price per minute", "while plugged in", initial=0)
    idle_fee_per_minute = _money_field(
        "Idle fee per minute", "after the idle grace minutes", initial=0
    )
    authorise_amount = _money_field(
        "Amount reserved at start", "reserved on the card when the session starts"
    )
    vat_rate = forms.DecimalField(
        label="VAT rate (%)",
        min_value=0,
        max_value=100,
        decimal_places=2,
        initial=21,
        help_text="included in the prices, e.g. 21 or 9.5",
    )

    class Meta:
        model = Tariff
        fields = [
            "site",
            "name",
            "active",
            "idle_grace_minutes",
            "max_session_minutes",
            "start_timeout_minutes",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance = self.instance
        currency = instance.site.currency if instance.site_id else None
        for money_field in TARIFF_MONEY.values():
            field = self.fields[money_field]
            where = f"in {currency}" if currency else "in the site's currency"
            field.help_text = ", ".join(filter(None, [f"{where}, VAT incl.", field.help_text]))
        if instance.pk is not None:
            for minor_field, money_field in TARIFF_MONEY.items():
                self.initial[money_field] = to_decimal(getattr(instance, minor_field), currency)
            # Division keeps the shortest exact form: 2100 -> 21, 950 -> 9.5, 2000 -> 20.
            self.initial["vat_rate"] = Decimal(instance.vat_rate_bp) / 100

    def clean(self):
        cleaned = super().clean()
        site = cleaned.get("site") or (self.instance.site if self.instance.site_id else None)
        if site is None:
            return cleaned  # the site's own error says what is missing
        places = exponent(site.currency)
        for minor_field, money_field in TARIFF_MONEY.items():
            amount = cleaned.get(money_field)
            if amount is None:
                continue
            minor = amount.scaleb(places)
            if minor != minor.to_integral_value():
                self.add_error(money_field, f"{site.currency} has {places} decimal(s) at most.")
                continue
            setattr(self.instance, minor_field, int(minor))
        if cleaned.get("authorise_amount") == 0:
            # The table's tariff_authorise_positive, said before the database refuses it.
            self.add_error("authorise_amount", "The amount reserved at start must be above 0.")
        vat = cleaned.get("vat_rate")
        if vat is not None:
            bp = vat.scaleb(2)
            if bp != bp.to_integral_value():
                self.add_error("vat_rate", "At most 2 decimals, e.g. 9.25.")
            else:
                self.instance.vat_rate_bp = int(bp)
        return cleaned


def _money_column(minor_field: str, label: str):
    """A changelist column (a ModelAdmin method) showing a minor-unit field as money."""

    @admin.display(description=label, ordering=minor_field)
    def column(_model_admin, obj):
        return format_money(getattr(obj, minor_field), obj.currency)

    return column


@admin.register(Tariff)
class TariffAdmin(admin.ModelAdmin):
    form = TariffForm
    fields = [
        "site",
        "name",
        "active",
        *TARIFF_MONEY.values(),
        "vat_rate",
        "idle_grace_minutes",
        "max_session_minutes",
        "start_timeout_minutes",
    ]
    list_display = [
        "name",
        "site",
        "active",
        "start_fee",
        "price_per_kwh",
        "price_per_minute",
        "idle_fee_per_minute",
        "vat_rate",
        "authorise_amount",
    ]
    list_filter = ["active", "site"]
    search_fields = ["name", "site__name"]
    list_select_related = ["site"]

    start_fee = _money_column("start_fee_minor", "Start fee")
    price_per_kwh = _money_column("price_per_kwh_minor", "Per kWh")
    price_per_minute = _money_column("price_per_minute_minor", "Per minute")
    idle_fee_per_minute = _money_column("idle_fee_per_minute_minor", "Idle fee / min")
    authorise_amount = _money_column("authorise_amount_minor", "Reserved at start")

    @admin.display(description="VAT", ordering="vat_rate_bp")
    def vat_rate(self, obj):
        return bp_percent(obj.vat_rate_bp)


@admin.register(ChargingSession)
class ChargingSessionAdmin(ReadOnlyAdmin):
    """Read-only: sessions change state and money only through sessions.services (audited)."""

    list_display = [
        "public_id",
        "requested_at",
        "site",
        "terminal",
        "state",
        "close_reason",
        "card_brand",
        "masked_pan",
        "cost_total",
        "captured_amount",
    ]
    list_filter = ["state", "close_reason", "site", "card_brand", "cost_capped"]
    search_fields = [
        "=public_id",
        "card_token",
        "pan_last4",
        "connector__evse_id",
        "terminal__terminal_id",
    ]
    list_select_related = ["site", "terminal"]
    date_hierarchy = "requested_at"

    cost_total = _money_column("cost_total_minor", "Total")
    captured_amount = _money_column("captured_amount_minor", "Captured")


class DeviceMessageInline(ReadOnlyInline, admin.TabularInline):
    model = DeviceMessage
    fields = ["seq", "target", "lines", "received_at"]
    readonly_fields = fields


@admin.register(TerminalTransaction)
class TerminalTransactionAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "terminal",
        "operation",
        "request_id",
        "amount",
        "state",
        "outcome",
        "session",
    ]
    list_filter = ["operation", "state", "outcome", "terminal__site"]
    search_fields = [
        "=public_id",
        "request_id",
        "terminal__terminal_id",
        "stan",
        "approval_code",
        "card_token",
    ]
    list_select_related = ["terminal", "session"]
    date_hierarchy = "created_at"
    inlines = [DeviceMessageInline]

    @admin.display(description="Amount", ordering="amount_minor")
    def amount(self, obj):
        # Requests that carry no money (card reads, status) have no currency.
        return format_money(obj.amount_minor, obj.currency) if obj.currency else "—"


@admin.register(DeviceMessage)
class DeviceMessageAdmin(ReadOnlyAdmin):
    list_display = ["transaction", "seq", "target", "received_at"]
    list_filter = ["target"]
    search_fields = ["transaction__request_id"]
    list_select_related = ["transaction__terminal"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """New keys come from ApiKey.issue(); the raw key is shown once, the hash never."""

    list_display = [
        "name",
        "site",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked",
    ]
    list_filter = ["revoked", "site"]
    search_fields = ["name", "prefix", "site__name"]
    list_select_related = ["site"]
    actions = ["rotate_keys"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "site", "expires_at"]
        return ["name", "site", "prefix", "created_at", "last_used_at", "expires_at", "revoked"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["site", "prefix", "created_at", "last_used_at"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw = ApiKey.issue(obj.name, obj.site)
        if obj.expires_at:
            key.expires_at = obj.expires_at
            key.save(update_fields=["expires_at"])
        # The admin goes on to log and redirect using obj: make it the issued row.
        obj.__dict__.update({f.attname: getattr(key, f.attname) for f in ApiKey._meta.fields})
        obj._state.adding = False
        messages.success(
            request,
            f"API key for {key.name}: {raw} — copy it now; it is not stored and will not be "
            "shown again.",
        )

    def has_delete_permission(self, request, obj=None):
        # Revoke instead, so the key's history (last use) stays.
        return False

    @admin.action(description="Rotate: new key, the old one expires in 24 h")
    def rotate_keys(self, request, queryset):
        for old in queryset.select_related("site"):
            try:
                new, raw = old.rotate(ApiKey.ROTATION_OVERLAP)
            except ValueError as exc:
                messages.error(request, str(exc))
                continue
            messages.success(
                request,
                f"New API key for {new.name}: {raw} — copy it now; it is not stored and will "
                f"not be shown again. {old} stops working at {old.expires_at:%Y-%m-%d %H:%M %Z}.",
            )


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ["key", "api_key", "status_code", "created_at"]
    search_fields = ["key"]
    list_select_related = ["api_key"]


@admin.register(IssuedReceipt)
class IssuedReceiptAdmin(ReadOnlyAdmin):
    """Read-only: numbers are given by sessions.receipts.issue_receipt, never by hand."""

    list_display = ["label", "site", "issued_at", "session"]
    list_filter = ["site"]
    search_fields = ["=number", "=session__public_id"]
    list_select_related = ["site", "session"]


@admin.register(InvoiceRequest)
class InvoiceRequestAdmin(ReadOnlyAdmin):
    """Read-only: finance marks requests on the staff page (audited), not here."""

    list_display = ["created_at", "company_name", "vat_number", "email", "state", "handled_by"]
    list_filter = ["state"]
    search_fields = ["company_name", "vat_number", "email", "=session__public_id"]
    list_select_related = ["session"]


@admin.register(OcppMessage)
class OcppMessageAdmin(ReadOnlyAdmin):
    list_display = ["at", "charge_point", "direction", "kind", "action", "message_id", "note"]
    list_filter = ["direction", "kind", "action"]
    search_fields = ["charge_point__identity", "message_id", "action", "note"]
    list_select_related = ["charge_point"]
    date_hierarchy = "at"


@admin.register(OcppCommand)
class OcppCommandAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "charge_point",
        "action",
        "purpose",
        "state",
        "claimed_by",
        "answered_at",
        "error",
    ]
    list_filter = ["state", "action", "purpose"]
    search_fields = ["charge_point__identity", "public_id", "claimed_by"]
    list_select_related = ["charge_point"]
