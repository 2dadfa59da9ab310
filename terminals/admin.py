from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from evpay import audit
from evpay.admin import ReadOnlyAdmin, ReadOnlyInline
from evpay.audit import Actor
from terminals.models import (
    ChargePoint,
    ClosingBrandTotal,
    Connector,
    MifareRead,
    PeriodClosing,
    Site,
    Terminal,
    TerminalBrand,
    TerminalStatusChange,
)


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "time_zone", "currency"]
    list_filter = ["time_zone", "currency"]
    search_fields = ["name", "address", "legal_name", "vat_number"]
    readonly_fields = ["public_id", "receipt_counter"]
    fieldsets = [
        (None, {"fields": ["public_id", "name", "address", "time_zone", "currency"]}),
        (
            "Receipts",
            {
                "fields": [
                    "legal_name",
                    "legal_address",
                    "vat_number",
                    "receipt_prefix",
                    "receipt_counter",
                ]
            },
        ),
    ]


class ConnectorInline(admin.TabularInline):
    model = Connector
    fk_name = "terminal"
    extra = 0
    fields = ["evse_id", "label", "enabled", "charge_point", "ocpp_connector_id", "ocpp_evse_id"]


class ChargePointConnectorInline(admin.TabularInline):
    model = Connector
    fk_name = "charge_point"
    extra = 0
    fields = ["evse_id", "label", "terminal", "ocpp_connector_id", "ocpp_evse_id", "ocpp_status"]
    readonly_fields = ["ocpp_status"]


class TerminalBrandInline(admin.TabularInline):
    model = TerminalBrand
    extra = 0


@admin.register(Terminal)
class TerminalAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "terminal_id",
        "site",
        "host",
        "enabled",
        "status",
        "status_changed_at",
        "last_seen_at",
    ]
    list_filter = ["enabled", "status", "site"]
    search_fields = ["name", "terminal_id", "host"]
    list_select_related = ["site"]
    inlines = [ConnectorInline, TerminalBrandInline]
    # Status, counters and the lease are written by the services only.
    readonly_fields = [
        "public_id",
        "status",
        "status_changed_at",
        "last_seen_at",
        "consecutive_failures",
        "brands_refreshed_at",
        "request_counter",
        "lease_owner",
        "lease_until",
    ]


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    list_display = ["evse_id", "label", "terminal", "charge_point", "ocpp_status", "enabled"]
    list_filter = ["enabled", "terminal__site"]
    search_fields = ["evse_id", "label", "terminal__terminal_id", "terminal__name"]
    list_select_related = ["terminal", "charge_point"]
    readonly_fields = ["public_id", "ocpp_status", "ocpp_status_at"]


@admin.register(ChargePoint)
class ChargePointAdmin(admin.ModelAdmin):
    """A charger speaking OCPP. Its password is generated (action below or
    `manage.py ocpp_charger_password <id>`), shown once, stored as a hash."""

    list_display = [
        "identity",
        "name",
        "site",
        "enabled",
        "connected",
        "ocpp_version",
        "firmware_version",
        "last_message_at",
    ]
    list_filter = ["enabled", "connected", "ocpp_version", "site"]
    search_fields = ["identity", "name", "serial_number"]
    list_select_related = ["site"]
    inlines = [ChargePointConnectorInline]
    actions = ["new_password"]
    # What the charger reports and the connection state are written by the OCPP server only.
    readonly_fields = [
        "public_id",
        "password_set_at",
        "ocpp_version",
        "vendor",
        "model",
        "serial_number",
        "firmware_version",
        "booted_at",
        "connected",
        "connected_to",
        "connected_at",
        "held_until",
        "last_message_at",
    ]

    @admin.action(description=_("Generate a new OCPP password (shown once)"))
    def new_password(self, request, queryset):
        for cp in queryset:
            raw = cp.set_new_password()
            audit.record(Actor.user(request.user), cp, "ocpp.password_set", reason="new password")
            messages.success(
                request,
                _(
                    "Charger %(id)s: user name %(id)s, password %(password)s — copy it now; it "
                    "is not stored and will not be shown again."
                )
                % {"id": cp.identity, "password": raw},
            )


@admin.register(TerminalStatusChange)
class TerminalStatusChangeAdmin(ReadOnlyAdmin):
    list_display = ["at", "terminal", "from_status", "to_status", "detail"]
    list_filter = ["to_status", "from_status"]
    search_fields = ["terminal__terminal_id", "terminal__name", "detail"]
    list_select_related = ["terminal"]
    date_hierarchy = "at"


class ClosingBrandTotalInline(ReadOnlyInline, admin.TabularInline):
    model = ClosingBrandTotal
    fields = [
        "brand",
        "currency",
        "terminal_count",
        "terminal_amount_minor",
        "our_count",
        "our_amount_minor",
        "explanation",
    ]
    readonly_fields = fields


@admin.register(PeriodClosing)
class PeriodClosingAdmin(ReadOnlyAdmin):
    list_display = ["business_date", "terminal", "state", "triggered_by", "period_end"]
    list_filter = ["state", "terminal__site"]
    search_fields = ["terminal__terminal_id", "terminal__name", "request_id"]
    list_select_related = ["terminal"]
    date_hierarchy = "business_date"
    inlines = [ClosingBrandTotalInline]


@admin.register(ClosingBrandTotal)
class ClosingBrandTotalAdmin(ReadOnlyAdmin):
    list_display = [
        "closing",
        "brand",
        "currency",
        "terminal_count",
        "terminal_amount_minor",
        "our_count",
        "our_amount_minor",
    ]
    list_filter = ["brand", "currency"]
    search_fields = ["closing__terminal__terminal_id", "brand"]
    list_select_related = ["closing__terminal"]


@admin.register(MifareRead)
class MifareReadAdmin(ReadOnlyAdmin):
    list_display = ["requested_at", "terminal", "requested_by", "state", "uid", "completed_at"]
    list_filter = ["state"]
    search_fields = ["terminal__terminal_id", "uid"]
    list_select_related = ["terminal", "requested_by"]
