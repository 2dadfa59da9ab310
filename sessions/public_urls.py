"""Driver-facing receipt pages: no login (see sessions/public.py and evpay.security.PUBLIC_PATHS)."""

from django.urls import path

from sessions import public

app_name = "receipts"

urlpatterns = [
    path("receipt/", public.lookup, name="lookup"),
    path("r/<str:token>/", public.public_receipt, name="public"),
    path("r/<str:token>/receipt.pdf", public.public_receipt_pdf, name="pdf"),
    path("r/<str:token>/receipt.txt", public.public_receipt_text, name="text"),
    path("r/<str:token>/qr.svg", public.public_receipt_qr, {"kind": "svg"}, name="qr_svg"),
    path("r/<str:token>/qr.png", public.public_receipt_qr, {"kind": "png"}, name="qr_png"),
    path("r/<str:token>/email/", public.public_receipt_email, name="email"),
    path("r/<str:token>/invoice/", public.public_invoice_request, name="invoice"),
]
