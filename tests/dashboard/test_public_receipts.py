"""The drivers' receipt pages without login: signed link, lookup, e-mail, invoice request."""

import re
import threading

import pytest
from django.core import signing
from django.db import connection
from django.test import Client
from django.urls import reverse

from evpay.models import AuditEvent, RateCounter
from sessions import receipts
from sessions.models import InvoiceRequest, IssuedReceipt
from tests.dashboard import factories as f

pytestmark = pytest.mark.django_db


def link(session):
    return reverse("receipts:public", args=[receipts.receipt_token(session)])


def lookup_data(session, **changes):
    return {
        "site": str(session.site.public_id),
        "date": "2026-03-01",
        "amount": "4.50",
        "last4": "4242",
    } | changes


def test_the_signed_link_shows_the_cardholder_receipt_without_login(client, paid):
    response = client.get(link(paid))
    assert response.status_code == 200
    html = response.content.decode()
    for text in (
        "Laadpaal Exploitatie B.V.",
        "Herengracht 100",
        "NL123456789B01",
        f"S{paid.site_id}-000001",
        "Depot Utrecht",
        "NL*EVP*E1234",
        "10.000 kWh",
        "1:00",  # charging 22:31 -> 23:31 UTC
        "VAT 21% included",
        "€\u00a00.78",
        "€\u00a04.50",
        "Visa 4111 **** **** 4242",
        "€\u00a050.00",
        "the remaining €\u00a045.50 was released",
        "CARDHOLDER COPY",
        # Site-local: 23:40 UTC is 00:40 on the 2nd in Amsterdam.
        "2026-03-02 00:40 CET",
    ):
        assert text in html, text
    # Neither the merchant copy nor the pre-authorisation ticket is the driver's.
    assert "MERCHANT COPY" not in html and "PRE-AUTH" not in html
    assert response["Cache-Control"].startswith("max-age=0")


def test_the_receipt_page_needs_four_queries_session_number_ticket_and_invoice_state(
    client, paid, django_assert_max_num_queries
):
    client.get(link(paid))  # the first view issues the number (a few writes, once)
    with django_assert_max_num_queries(4):
        assert client.get(link(paid)).status_code == 200


def test_a_tampered_or_unknown_token_is_a_bare_404(client, paid):
    token = receipts.receipt_token(paid)
    forged = signing.Signer(salt=receipts.TOKEN_SALT, key="not-our-key").sign(paid.public_id.hex)
    unknown = signing.Signer(salt=receipts.TOKEN_SALT).sign("0" * 32)
    other_salt = signing.Signer(salt="something-else").sign(paid.public_id.hex)
    bodies = set()
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), forged, unknown, other_salt, "x"):
        for name in ("receipts:public", "receipts:pdf", "receipts:text", "receipts:qr_svg"):
            response = client.get(reverse(name, args=[bad]))
            assert response.status_code == 404
            if len(bad) > 1:  # nor echoed, e.g. in the way back
                assert bad.encode() not in response.content
            # The language form's CSRF token is masked anew for every response.
            bodies.add(re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", response.content))
    assert len(bodies) == 1  # the same page whatever the reason
    assert b"settled" not in next(iter(bodies)) and b"signature" not in next(iter(bodies)).lower()


def test_an_unpaid_session_has_no_public_receipt(client, paid):
    released = f.make_session(paid.connector, close_reason="released", captured_amount_minor=0)
    assert client.get(link(released)).status_code == 404


def test_receipt_pages_refuse_the_wrong_method(client, paid):
    token = receipts.receipt_token(paid)
    assert client.post(link(paid)).status_code == 405
    assert client.get(reverse("receipts:email", args=[token])).status_code == 405
    assert client.get(reverse("receipts:invoice", args=[token])).status_code == 405
    assert client.put(reverse("receipts:lookup")).status_code == 405


def test_receipt_numbers_are_sequential_per_site_and_stable(client, paid):
    second = f.make_session(paid.connector)
    other_site_session = f.make_session(f.make_connector(f.make_terminal()))
    client.get(link(second))
    client.get(link(paid))
    client.get(link(second))
    client.get(link(other_site_session))
    numbers = {r.session_id: r.label for r in IssuedReceipt.objects.all()}
    site = paid.site_id
    assert numbers == {
        second.pk: f"S{site}-000001",
        paid.pk: f"S{site}-000002",
        other_site_session.pk: f"S{other_site_session.site_id}-000001",
    }
    assert AuditEvent.objects.filter(action="receipt.issued").count() == 3
    paid.site.refresh_from_db()
    assert paid.site.receipt_counter == 2


def test_the_receipt_prefix_of_the_site_names_the_number(client, paid):
    paid.site.receipt_prefix = "UTR"
    paid.site.save()
    assert "UTR-000001" in client.get(link(paid)).content.decode()


def test_the_plain_text_receipt_has_the_legal_fields(client, paid):
    response = client.get(reverse("receipts:text", args=[receipts.receipt_token(paid)]))
    text = response.content.decode()
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    for field in ("Laadpaal Exploitatie B.V.", "NL123456789B01", "NL*EVP*E1234", "4.50"):
        assert field in text
    assert link(paid) in text


def test_the_qr_code_encodes_the_link(client, paid):
    svg = client.get(reverse("receipts:qr_svg", args=[receipts.receipt_token(paid)]))
    assert svg["Content-Type"] == "image/svg+xml" and svg.content.startswith(b"<svg")
    png = client.get(reverse("receipts:qr_png", args=[receipts.receipt_token(paid)]))
    assert png.content.startswith(b"\x89PNG")


# --------------------------------------------------------------------------- lookup


def test_an_exact_lookup_redirects_to_the_receipt(client, paid):
    response = client.post(reverse("receipts:lookup"), lookup_data(paid))
    assert response.status_code == 302 and response["Location"] == link(paid)


def test_the_lookup_takes_either_local_day_of_a_session_past_midnight(client, paid):
    # Requested 23:30 on the 1st, closed 00:40 on the 2nd (Amsterdam).
    response = client.post(reverse("receipts:lookup"), lookup_data(paid, date="2026-03-02"))
    assert response.status_code == 302
    response = client.post(reverse("receipts:lookup"), lookup_data(paid, date="2026-03-03"))
    assert response.status_code == 200


def _message(response) -> str:
    return re.search(r'id="lookup-status">([^<]*)<', response.content.decode()).group(1)


def test_a_wrong_lookup_and_an_ambiguous_one_read_the_same(client, paid):
    url = reverse("receipts:lookup")
    wrong = client.post(url, lookup_data(paid, last4="4243"))
    # A second session with the same day, amount and last four: two drivers' cards.
    f.make_session(
        paid.connector, requested_at=paid.requested_at, closed_at=paid.closed_at, pan_last4="4242"
    )
    ambiguous = client.post(url, lookup_data(paid))
    assert wrong.status_code == ambiguous.status_code == 200
    assert _message(wrong) == _message(ambiguous)
    assert "We could not find one receipt" in _message(wrong)
    for response in (wrong, ambiguous):
        assert receipts.receipt_token(paid) not in response.content.decode()
        assert "4111" not in response.content.decode()


def test_a_lookup_with_bad_values_says_which_field(client, paid):
    response = client.post(
        reverse("receipts:lookup"),
        lookup_data(paid, amount="4.505", last4="42a2", date="2026-02-31"),
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert "Enter an amount like 12.50." in html
    assert "Enter the four digits, e.g. 1234." in html
    assert "Enter a valid date." in html


def test_control_characters_in_a_lookup_are_refused_before_the_view(client, paid):
    response = client.post(reverse("receipts:lookup"), lookup_data(paid, amount="4.50\x00"))
    assert response.status_code == 400
    assert not RateCounter.objects.exists()


def test_the_lookup_limit_holds_per_address_even_for_a_right_answer(client, paid, settings):
    settings.EVPAY_RECEIPT_LOOKUP_LIMIT = 3
    url = reverse("receipts:lookup")
    for _ in range(3):
        assert client.post(url, lookup_data(paid, last4="0000")).status_code == 200
    limited = client.post(url, lookup_data(paid))
    assert limited.status_code == 429
    assert "Too many lookups" in limited.content.decode()
    assert receipts.receipt_token(paid) not in limited.content.decode()
    # Another address has its own allowance.
    other = client.post(url, lookup_data(paid), REMOTE_ADDR="192.0.2.7")
    assert other.status_code == 302
    # No address is stored in the clear.
    assert not RateCounter.objects.filter(key__contains="127.0.0.1").exists()


def test_behind_the_proxy_the_limit_counts_the_address_the_proxy_saw(client, paid, settings):
    settings.EVPAY_RECEIPT_LOOKUP_LIMIT = 1
    settings.EVPAY_BEHIND_PROXY = True
    url = reverse("receipts:lookup")
    client.post(url, lookup_data(paid), HTTP_X_FORWARDED_FOR="10.0.0.1, 198.51.100.1")
    # A client cannot escape by inventing an earlier hop.
    again = client.post(url, lookup_data(paid), HTTP_X_FORWARDED_FOR="10.0.0.2, 198.51.100.1")
    assert again.status_code == 429


def test_public_forms_need_the_csrf_token(paid):
    client = Client(enforce_csrf_checks=True)
    assert client.post(reverse("receipts:lookup"), lookup_data(paid)).status_code == 403
    token = receipts.receipt_token(paid)
    email = client.post(reverse("receipts:email", args=[token]), {"email": "a@example.com"})
    assert email.status_code == 403


def test_the_lookup_page_explains_phone_wallets(client):
    html = client.get(reverse("receipts:lookup")).content.decode()
    assert "not those printed on your plastic card" in html


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_limit_holds_under_concurrent_hits_on_postgresql():
    from evpay import throttle

    results, barrier = [], threading.Barrier(8)

    def hit():
        barrier.wait()
        try:
            results.append(throttle.hit("test", "203.0.113.9", limit=5, window_seconds=3600))
        finally:
            connection.close()

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 3 + [True] * 5


# --------------------------------------------------------------------------- e-mail


def test_the_pdf_is_emailed_to_the_address_typed(client, paid, mailoutbox):
    token = receipts.receipt_token(paid)
    response = client.post(reverse("receipts:email", args=[token]), {"email": "driver@example.com"})
    assert response.status_code == 200
    assert "The receipt was sent to driver@example.com." in response.content.decode()
    (mail,) = mailoutbox
    assert mail.to == ["driver@example.com"]
    assert f"S{paid.site_id}-000001" in mail.subject
    (name, content, mimetype) = mail.attachments[0]
    assert name.endswith(".pdf") and mimetype == "application/pdf" and content.startswith(b"%PDF")
    event = AuditEvent.objects.get(action="receipt.emailed")
    assert event.data["to"] == "d***@example.com"  # not the address in the clear


def test_emails_are_limited_per_session_and_per_address(client, paid, mailoutbox, settings):
    settings.EVPAY_RECEIPT_EMAIL_LIMIT = 2
    url = reverse("receipts:email", args=[receipts.receipt_token(paid)])
    assert client.post(url, {"email": "a@example.com"}).status_code == 200
    assert client.post(url, {"email": "b@example.com"}).status_code == 200
    refused = client.post(url, {"email": "c@example.com"})
    assert refused.status_code == 429 and "sent enough e-mails" in refused.content.decode()
    assert len(mailoutbox) == 2
    # One address, many receipts: its own limit.
    for n in range(3):
        other = f.make_session(paid.connector)
        status = client.post(
            reverse("receipts:email", args=[receipts.receipt_token(other)]),
            {"email": "victim@example.com"},
        ).status_code
        assert status == (200 if n < 2 else 429)
    assert len(mailoutbox) == 4


def test_a_bad_address_is_named_and_nothing_is_sent(client, paid, mailoutbox):
    url = reverse("receipts:email", args=[receipts.receipt_token(paid)])
    response = client.post(url, {"email": "not an address"})
    assert response.status_code == 400
    assert "Enter a valid email address." in response.content.decode()
    assert mailoutbox == []


# --------------------------------------------------------------------------- invoice request

INVOICE = {
    "company_name": "Acme Logistics B.V.",
    "vat_number": "nl 1234.56789 b01",
    "address": "Industrieweg 5\n1234 AB Utrecht",
    "email": "finance@acme.example",
}


def test_an_invoice_request_is_stored_for_finance_and_audited(client, paid):
    url = reverse("receipts:invoice", args=[receipts.receipt_token(paid)])
    response = client.post(url, INVOICE)
    assert response.status_code == 200
    assert "The invoice will be sent to finance@acme.example." in response.content.decode()
    invoice = InvoiceRequest.objects.get()
    assert invoice.session == paid and invoice.vat_number == "NL123456789B01"
    assert invoice.state == InvoiceRequest.State.REQUESTED
    event = AuditEvent.objects.get(action="invoice.requested")
    assert event.actor_kind == "driver" and event.session_ref == paid.public_id
    # Asking again adds nothing: one open request per receipt.
    again = client.post(url, INVOICE)
    assert "An invoice has been requested for this receipt" in again.content.decode()
    assert InvoiceRequest.objects.count() == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vat_number": "123456789"}, "must start with an EU country code"),
        ({"vat_number": "NL12345678B01"}, "is not in the form of a NL VAT number"),
        ({"company_name": "Acme\nEvil"}, "Enter this on one line."),
        ({"email": "finance"}, "Enter a valid email address."),
        ({"company_name": ""}, "This field is required."),
    ],
)
def test_a_bad_invoice_request_is_explained_and_nothing_is_stored(client, paid, changes, message):
    url = reverse("receipts:invoice", args=[receipts.receipt_token(paid)])
    response = client.post(url, INVOICE | changes)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not InvoiceRequest.objects.exists()
    assert not AuditEvent.objects.filter(action="invoice.requested").exists()


def test_finance_lists_invoice_requests_and_an_operator_marks_one_sent(
    client_for, viewer, operator, paid
):
    invoice = InvoiceRequest.objects.create(
        session=paid, **(INVOICE | {"vat_number": "DE123456789"})
    )
    page = client_for(viewer).get(reverse("sessions:invoice_requests"))
    assert "Acme Logistics B.V." in page.content.decode()
    mark = reverse("sessions:invoice_request_mark", args=[invoice.public_id])
    assert client_for(viewer).post(mark, {"state": "sent"}).status_code == 403
    client = client_for(operator)
    assert client.get(mark).status_code == 405
    response = client.post(mark, {"state": "sent"})
    assert response.status_code == 302
    invoice.refresh_from_db()
    assert invoice.state == "sent" and invoice.handled_by == "otto-operator"
    event = AuditEvent.objects.get(action="invoice.handled")
    assert (event.from_state, event.to_state) == ("requested", "sent")
    # Twice is once.
    client.post(mark, {"state": "refused"})
    invoice.refresh_from_db()
    assert invoice.state == "sent"
    assert AuditEvent.objects.filter(action="invoice.handled").count() == 1


def test_the_invoice_list_needs_a_role(client_for, no_role_user):
    assert client_for(no_role_user).get(reverse("sessions:invoice_requests")).status_code == 403


# --------------------------------------------------------------------------- staff side


def test_the_staff_session_page_shows_the_drivers_link_and_qr_code(client_for, viewer, paid):
    html = client_for(viewer).get(reverse("sessions:detail", args=[paid.public_id])).content
    html = html.decode()
    assert link(paid) in html and '<svg width="' in html
    # Looking at the session issues no receipt number.
    assert not IssuedReceipt.objects.exists()


def test_a_signed_in_admin_opening_a_drivers_link_is_not_asked_for_the_second_factor(
    client_for, admin_user, paid
):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice.objects.create(user=admin_user, name="phone", confirmed=True)
    client = client_for(admin_user)
    assert client.get(link(paid)).status_code == 200


def test_the_charger_api_gives_the_receipt_link_for_its_display_once_paid(client, paid, settings):
    from sessions.models import ApiKey

    settings.EVPAY_PUBLIC_BASE_URL = "https://pay.example.nl"
    _key, raw = ApiKey.issue("charger-1", paid.site)
    read = client.get(f"/api/v1/sessions/{paid.public_id}", HTTP_AUTHORIZATION=f"Bearer {raw}")
    url = read.json()["receipt_url"]
    assert url == "https://pay.example.nl" + link(paid)
    assert client.get(link(paid)).status_code == 200
    charging = f.make_session(
        f.make_connector(paid.terminal), state="charging", closed_at=None, captured_amount_minor=0
    )
    read = client.get(f"/api/v1/sessions/{charging.public_id}", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert read.json()["receipt_url"] is None


def test_the_drivers_pages_neither_time_out_nor_refresh_a_staff_session(client_for, operator, paid):
    import time

    from evpay.security import LAST_ACTIVITY

    client = client_for(operator)
    assert client.get("/").status_code == 200
    session = client.session
    session[LAST_ACTIVITY] = idle_since = time.time() - 16 * 60
    session.save()
    # A driver's link opened in a staff browser: shown, not a log-in page, and not activity.
    assert client.get(link(paid)).status_code == 200
    assert client.session[LAST_ACTIVITY] == idle_since
    assert client.get("/sessions/").status_code == 302  # the staff pages still time out


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_receipt_numbers_stay_unique_and_gapless_when_issued_concurrently_on_postgresql():
    from evpay.audit import Actor

    first = f.make_paid_session("Concurrent site")
    others = [f.make_session(first.connector) for _ in range(5)]
    # Every session asked for twice at the same moment, as two workers would.
    targets = [first, *others] * 2
    barrier, errors = threading.Barrier(len(targets)), []

    def issue(session):
        barrier.wait()
        try:
            receipts.issue_receipt(session, Actor.system("test"))
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=issue, args=(s,)) for s in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    numbers = sorted(IssuedReceipt.objects.values_list("number", flat=True))
    assert numbers == [1, 2, 3, 4, 5, 6]
    first.site.refresh_from_db()
    assert first.site.receipt_counter == 6


def test_the_drivers_pages_offer_a_language_choice_that_returns_to_the_page(client, paid):
    for page in (reverse("receipts:lookup"), link(paid)):
        html = client.get(page).content.decode()
        assert 'action="/i18n/setlang/"' in html and 'name="language"' in html
        assert f'name="next" value="{page}"' in html
