"""Receipt pages for drivers, without an account (issue #17).

- /r/<token>/ : the receipt a signed link names (QR code on the staff page and the printout);
  a tampered or unknown token is a bare 404, whatever the reason.
- /receipt/ : the lookup by site, day, amount and the card's last four digits. Only an exact,
  single match answers, with a redirect to its link; no match and several matches get the
  same words, so the form tells nothing about other drivers' sessions. Limited per client
  address (EVPAY_RECEIPT_LOOKUP_LIMIT per EVPAY_RECEIPT_LOOKUP_WINDOW_MINUTES).
- /r/<token>/email/ : the PDF to an address the driver types, limited per address and per
  session (EVPAY_RECEIPT_EMAIL_LIMIT per EVPAY_RECEIPT_EMAIL_WINDOW_MINUTES).
- /r/<token>/invoice/ : a request for an invoice in a company's name, stored for finance.

Control characters and over-long values never reach these views (HostileInputMiddleware
answers 400); the forms check types, ranges and formats.
"""

from __future__ import annotations

import functools
import logging

from django import forms
from django.conf import settings
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from evpay import audit, throttle
from evpay.models import AuditEvent
from evpay.money import exponent
from evpay.templatetags.evpay_tags import site_zone
from evpay.validation import normalise_vat_number, parse_amount, validate_vat_number
from evpay.web import end_of_day, start_of_day
from sessions import receipts
from sessions.models import ChargingSession, InvoiceRequest, SessionState
from terminals.models import Site

log = logging.getLogger(__name__)

DRIVER = audit.Actor(AuditEvent.ActorKind.DRIVER, "driver (public receipt page)")
NO_MATCH = gettext_lazy(
    "We could not find one receipt for these details. Check the site, the date, the amount "
    "(as charged, e.g. 12.50) and the last four digits, and try again."
)


def _single_line(value: str) -> str:
    if "\n" in value or "\r" in value or "\t" in value:
        raise forms.ValidationError(_("Enter this on one line."))
    return value.strip()


class LookupForm(forms.Form):
    site = forms.ChoiceField(label=gettext_lazy("Charging location"))
    date = forms.DateField(
        label=gettext_lazy("Date of charging"),
        input_formats=["%Y-%m-%d"],
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    amount = forms.CharField(
        label=gettext_lazy("Amount paid"),
        max_length=12,
        help_text=gettext_lazy("As on your bank statement, e.g. 12.50"),
        widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}),
    )
    last4 = forms.RegexField(
        label=gettext_lazy("Last four digits of the card"),
        regex=r"^\d{4}$",
        max_length=4,
        error_messages={"invalid": gettext_lazy("Enter the four digits, e.g. 1234.")},
        widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "off"}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sites = {str(s.public_id): s for s in Site.objects.only("public_id", "name")}
        self.fields["site"].choices = [("", "—")] + [
            (key, site.name) for key, site in self.sites.items()
        ]

    def clean_date(self):
        day = self.cleaned_data["date"]
        if not (2000 <= day.year <= 2100):
            raise forms.ValidationError(_("Enter a date between 2000 and 2100."))
        return day

    def clean(self):
        data = super().clean()
        site = self.sites.get(data.get("site", ""))
        amount = parse_amount(data.get("amount"))
        if "amount" in data:
            if amount is None or amount <= 0:
                self.add_error("amount", _("Enter an amount like 12.50."))
            elif site is not None:
                minor = amount.scaleb(exponent(site.currency))
                if minor != minor.to_integral_value():
                    self.add_error("amount", _("Enter an amount like 12.50."))
                else:
                    data["amount_minor"] = int(minor)
        data["site_obj"] = site
        return data


class EmailForm(forms.Form):
    # Both forms are on one page and both have an "email": ids of their own.
    def __init__(self, *args, **kwargs):
        super().__init__(*args, auto_id="mail-%s", **kwargs)

    email = forms.EmailField(label=gettext_lazy("E-mail address"), max_length=254)


class InvoiceForm(forms.Form):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, auto_id="invoice-%s", **kwargs)

    company_name = forms.CharField(label=gettext_lazy("Company name"), max_length=200)
    vat_number = forms.CharField(label=gettext_lazy("VAT number"), max_length=20)
    address = forms.CharField(
        label=gettext_lazy("Company address"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    email = forms.EmailField(label=gettext_lazy("Send the invoice to"), max_length=254)

    def clean_company_name(self):
        return _single_line(self.cleaned_data["company_name"])

    def clean_vat_number(self):
        number = normalise_vat_number(_single_line(self.cleaned_data["vat_number"]))
        validate_vat_number(number)
        return number


# --------------------------------------------------------------------------- helpers


def with_receipt(view):
    """Resolves the link's token to its settled session, or answers the same bare 404 for a
    tampered token, an unknown session and an unpaid one (nor the token echoed back)."""

    @functools.wraps(view)
    def wrapped(request, token, *args, **kwargs):
        session = receipts.session_for_token(token)
        if session is None:
            return render(request, "receipts/not_found.html", status=404)
        return view(request, session, token, *args, **kwargs)

    return wrapped


def _limited(scope: str, value: str, limit: int, minutes: int) -> bool:
    return not throttle.hit(scope, value, limit=limit, window_seconds=minutes * 60)


def _receipt_page(request, session, token, *, status=200, **extra):
    receipt = receipts.receipt_for(session, DRIVER, request)
    context = {
        "session": session,
        "site": session.site,
        "receipt": receipt,
        "token": token,
        "email_form": extra.pop("email_form", None) or EmailForm(),
        "invoice_form": extra.pop("invoice_form", None) or InvoiceForm(),
        "invoice_open": session.invoice_requests.filter(
            state=InvoiceRequest.State.REQUESTED
        ).exists(),
        **extra,
    }
    return render(request, "receipts/public_receipt.html", context, status=status)


def _mask_email(address: str) -> str:
    local, _at, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


# --------------------------------------------------------------------------- views


@never_cache
@require_GET
@with_receipt
def public_receipt(request, session, token):
    return _receipt_page(request, session, token)


@never_cache
@require_GET
@with_receipt
def public_receipt_pdf(request, session, token):
    return _download(request, session, receipts.render_pdf, "application/pdf", "pdf")


@never_cache
@require_GET
@with_receipt
def public_receipt_text(request, session, token):
    return _download(request, session, receipts.render_text, "text/plain; charset=utf-8", "txt")


def _download(request, session, render, content_type: str, extension: str) -> HttpResponse:
    receipt = receipts.receipt_for(session, DRIVER, request)
    response = HttpResponse(render(receipt), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="receipt-{receipt.number}.{extension}"'
    return response


@require_GET
@with_receipt
def public_receipt_qr(request, session, token, kind):
    url = receipts.public_url(session, request)
    if kind == "svg":
        return HttpResponse(receipts.qr_svg(url), content_type="image/svg+xml")
    return HttpResponse(receipts.qr_png(url), content_type="image/png")


@require_POST
@with_receipt
def public_receipt_email(request, session, token):
    form = EmailForm(request.POST)
    if not form.is_valid():
        return _receipt_page(request, session, token, status=400, email_form=form)
    address = form.cleaned_data["email"].strip()
    limit, minutes = settings.EVPAY_RECEIPT_EMAIL_LIMIT, settings.EVPAY_RECEIPT_EMAIL_WINDOW_MINUTES
    # Both limits: one address cannot be flooded from many receipts, nor one receipt be used
    # to mail many addresses.
    if _limited("receipt-email-to", address.lower(), limit, minutes) or _limited(
        "receipt-email-session", session.public_id.hex, limit, minutes
    ):
        log.info("receipt e-mail refused by the limit for session %s", session.public_id)
        return _receipt_page(
            request,
            session,
            token,
            status=429,
            email_error=_(
                "This receipt or this address has been sent enough e-mails for now. "
                "Try again in %(minutes)s minutes, or download the PDF."
            )
            % {"minutes": minutes},
        )
    receipt = receipts.receipt_for(session, DRIVER, request)
    message = EmailMessage(
        subject=_("Your charging receipt %(number)s") % {"number": receipt.number},
        body=receipts.render_text(receipt),
        to=[address],
    )
    message.attach(f"receipt-{receipt.number}.pdf", receipts.render_pdf(receipt), "application/pdf")
    try:
        message.send()
    except OSError:  # SMTP down or refusing: tell the driver, keep the page
        log.exception("receipt e-mail for session %s could not be sent", session.public_id)
        return _receipt_page(
            request,
            session,
            token,
            status=503,
            email_error=_("The e-mail could not be sent just now. Please download the PDF."),
        )
    audit.record(
        DRIVER,
        session,
        "receipt.emailed",
        session=session,
        data={"to": _mask_email(address), "number": receipt.number},
    )
    return _receipt_page(
        request,
        session,
        token,
        email_sent=_("The receipt was sent to %(address)s.") % {"address": address},
    )


@require_POST
@with_receipt
def public_invoice_request(request, session, token):
    form = InvoiceForm(request.POST)
    if not form.is_valid():
        return _receipt_page(request, session, token, status=400, invoice_form=form)
    if _limited(
        "receipt-invoice",
        throttle.client_address(request),
        settings.EVPAY_RECEIPT_EMAIL_LIMIT,
        settings.EVPAY_RECEIPT_EMAIL_WINDOW_MINUTES,
    ):
        return _receipt_page(
            request,
            session,
            token,
            status=429,
            invoice_error=_("Too many requests from your connection; please try again later."),
        )
    data = form.cleaned_data
    try:
        with transaction.atomic():
            invoice = InvoiceRequest.objects.create(session=session, **data)
            audit.record(
                DRIVER,
                invoice,
                "invoice.requested",
                to_state=invoice.state,
                session=session,
                data={"company": data["company_name"][:200], "vat_number": data["vat_number"]},
            )
    except IntegrityError:  # invoice_one_open_per_session: one is already waiting
        return _receipt_page(request, session, token)
    return _receipt_page(
        request,
        session,
        token,
        invoice_done=_("Your request was received. The invoice will be sent to %(address)s.")
        % {"address": data["email"]},
    )


@never_cache
@require_http_methods(["GET", "POST"])
def lookup(request):
    if request.method == "GET":
        return render(request, "receipts/lookup.html", {"form": LookupForm()})
    limit = settings.EVPAY_RECEIPT_LOOKUP_LIMIT
    minutes = settings.EVPAY_RECEIPT_LOOKUP_WINDOW_MINUTES
    # Counted before the form is read: every try, right or wrong, spends one.
    if _limited("receipt-lookup", throttle.client_address(request), limit, minutes):
        log.info("receipt lookup refused by the limit")
        context = {
            "form": LookupForm(request.POST),
            "limited": _(
                "Too many lookups from your connection. Please try again in %(minutes)s minutes."
            )
            % {"minutes": minutes},
        }
        return render(request, "receipts/lookup.html", context, status=429)
    form = LookupForm(request.POST)
    if not form.is_valid() or form.cleaned_data.get("site_obj") is None:
        return render(request, "receipts/lookup.html", {"form": form}, status=400)
    data = form.cleaned_data
    site, day = data["site_obj"], data["date"]
    tz = site_zone(site)
    first, last = start_of_day(day, tz), end_of_day(day, tz)
    # The driver's day is the site's local day of either end of the session (one that ran
    # past midnight can be found by both dates).
    matches = list(
        ChargingSession.objects.filter(
            Q(requested_at__gte=first, requested_at__lt=last)
            | Q(closed_at__gte=first, closed_at__lt=last),
            site=site,
            state=SessionState.CLOSED,
            captured_amount_minor=data["amount_minor"],
            pan_last4=data["last4"],
        ).values_list("public_id", flat=True)[:2]
    )
    if len(matches) != 1:
        return render(
            request, "receipts/lookup.html", {"form": form, "no_match": NO_MATCH}, status=200
        )
    session = ChargingSession.objects.select_related("site").get(public_id=matches[0])
    return redirect(reverse("receipts:public", args=[receipts.receipt_token(session)]))
