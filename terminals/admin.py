from django.contrib import admin

from evpay.admin import ReadOnlyAdmin, ReadOnlyInline
from terminals.models import (
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
    extra = 0
    fields = ["evse_id", "label", "enabled"]


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
    list_display = ["evse_id", "label", "terminal", "enabled"]
    list_filter = ["enabled", "terminal__site"]
    search_fields = ["evse_id", "label", "terminal__terminal_id", "terminal__name"]
    list_select_related = ["terminal"]
    readonly_fields = ["public_id"]


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
