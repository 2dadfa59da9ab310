from django.urls import path

from terminals import views

app_name = "terminals"

urlpatterns = [
    path("terminals/", views.terminal_list, name="list"),
    path("terminals/<uuid:public_id>/", views.terminal_detail, name="detail"),
    path(
        "terminals/<uuid:public_id>/refresh-status/",
        views.terminal_action,
        {"action": "status"},
        name="refresh_status",
    ),
    path(
        "terminals/<uuid:public_id>/refresh-brands/",
        views.terminal_action,
        {"action": "brands"},
        name="refresh_brands",
    ),
    path(
        "terminals/<uuid:public_id>/run-closing/",
        views.terminal_action,
        {"action": "closing"},
        name="run_closing",
    ),
    path(
        "terminals/<uuid:public_id>/reprint/",
        views.terminal_action,
        {"action": "reprint"},
        name="reprint",
    ),
    path("terminals/<uuid:public_id>/mifare/", views.mifare_start, name="mifare_start"),
    path("terminals/mifare/<uuid:read_id>/", views.mifare_status, name="mifare_status"),
    path("closings/", views.closing_list, name="closings"),
    path("closings/<uuid:public_id>/", views.closing_detail, name="closing_detail"),
]
