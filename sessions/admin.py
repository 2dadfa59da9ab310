from django.contrib import admin, messages

from evpay.admin import ReadOnlyAdmin, ReadOnlyInline
from sessions.models import (
    ApiKey,
    ChargingSession,
    DeviceMessage,
    IdempotencyRecord,
    Tariff,
    TerminalTransaction,
)


@admin.register(Tariff)
class TariffAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "site",
        "active",
        "start_fee_minor",
        "price_per_kwh_minor",
        "price_per_minute_minor",
        "idle_fee_per_minute_minor",
        "vat_rate_bp",
        "authorise_amount_minor",
    ]
    list_filter = ["active", "site"]
    search_fields = ["name", "site__name"]
    list_select_related = ["site"]


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
        "cost_total_minor",
        "captured_amount_minor",
        "currency",
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
        "amount_minor",
        "currency",
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


@admin.register(DeviceMessage)
class DeviceMessageAdmin(ReadOnlyAdmin):
    list_display = ["transaction", "seq", "target", "received_at"]
    list_filter = ["target"]
    search_fields = ["transaction__request_id"]
    list_select_related = ["transaction__terminal"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """New keys come from ApiKey.issue(); the raw key is shown once, the hash never."""

    list_display = ["name", "site", "prefix", "created_at", "last_used_at", "revoked"]
    list_filter = ["revoked", "site"]
    search_fields = ["name", "prefix", "site__name"]
    list_select_related = ["site"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "site"]
        return ["name", "site", "prefix", "created_at", "last_used_at", "revoked"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["site", "prefix", "created_at", "last_used_at"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw = ApiKey.issue(obj.name, obj.site)
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


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ["key", "api_key", "status_code", "created_at"]
    search_fields = ["key"]
    list_select_related = ["api_key"]
