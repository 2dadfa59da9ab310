from django.urls import path

from sessions import views

app_name = "sessions"

urlpatterns = [
    path("sessions/", views.session_list, name="list"),
    path("sessions/<uuid:public_id>/", views.session_detail, name="detail"),
    path(
        "sessions/<uuid:public_id>/capture/",
        views.session_action,
        {"action": "capture"},
        name="capture",
    ),
    path(
        "sessions/<uuid:public_id>/release/",
        views.session_action,
        {"action": "release"},
        name="release",
    ),
    path(
        "sessions/<uuid:public_id>/retry-recovery/",
        views.session_action,
        {"action": "retry"},
        name="retry_recovery",
    ),
    path(
        "sessions/<uuid:public_id>/resolve/",
        views.session_action,
        {"action": "resolve"},
        name="resolve",
    ),
    path("sessions/<uuid:public_id>/receipt/", views.receipt, name="receipt"),
    path("sessions/<uuid:public_id>/receipt.txt", views.receipt_text, name="receipt_text"),
    path("sessions/<uuid:public_id>/receipt.pdf", views.receipt_pdf, name="receipt_pdf"),
    path("receipts/", views.receipt_search, name="receipts"),
    path("receipts/invoices/", views.invoice_requests, name="invoice_requests"),
    path(
        "receipts/invoices/<uuid:public_id>/mark/",
        views.invoice_request_mark,
        name="invoice_request_mark",
    ),
]
