"""Hand-written messages in the shape a real terminal sends: indentation, extra attributes
and elements we do not use, namespace prefixes, Latin-1 declarations."""

AUTHORISATION_RESPONSE = b"""<?xml version="1.0" encoding="UTF-8"?>
<CardServiceResponse xmlns="http://www.nrf-arts.org/IXRetail/namespace"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    RequestType="CardPreAuthorisation" ApplicationSender="CCV" WorkstationID="POS1"
    POPID="001" RequestID="000004711" OverallResult="Success">
  <Terminal TerminalID="52000001" STAN="000123" TerminalBatch="17"/>
  <Tender LanguageCode="nl">
    <TotalAmount Currency="EUR" PaymentAmount="50.00">50.00</TotalAmount>
    <Authorisation AcquirerID="CCV" ApprovalCode="A1B2C3" CardCircuit="VISA"
        CardPAN="476173******0119" ExpiryDate="1228" TimeStamp="2026-11-25T18:00:00+01:00"
        ActionCode="000" ReturnCode="0" Merchant="EVPAY"/>
  </Tender>
  <CardValue>
    <Token Type="CardToken">99ABCDEF0123456789</Token>
    <Token Type="PAR">V0010013018209487512345678901</Token>
  </CardValue>
  <SomeFutureElement>ignored</SomeFutureElement>
</CardServiceResponse>
"""

DECLINED_RESPONSE_LATIN1 = (
    '<?xml version="1.0" encoding="ISO-8859-1"?>\n'
    '<CardServiceResponse xmlns="http://www.nrf-arts.org/IXRetail/namespace" '
    'RequestType="CardPreAuthorisation" WorkstationID="POS1" RequestID="12" '
    'OverallResult="Failure">\n'
    '  <Terminal TerminalID="52000001" STAN="000124"/>\n'
    '  <Tender><Authorisation CardCircuit="ECMC" ActionCode="116" ReturnCode="51"/></Tender>\n'
    "  <PrivateData><ErrorCode>116</ErrorCode><ErrorText>Saldo ontoereikend \u2013 "
    "r\u00e9essayez</ErrorText></PrivateData>\n"
    "</CardServiceResponse>\n"
).encode("iso-8859-1", "xmlcharrefreplace")

# Latin-1 bytes under a UTF-8 header, as some POS software sends.
MISDECLARED_LATIN1 = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<ServiceResponse RequestType="Diagnosis" RequestID="5" OverallResult="Success">'
    '<Terminal TerminalID="52000001" TerminalState="READY"/>'
    "<PrivateData><ErrorText>Caf\u00e9 ferm\u00e9</ErrorText></PrivateData>"
    "</ServiceResponse>"
).encode("latin-1")

# Prefixed namespace instead of a default one.
PREFIXED_BRANDS = b"""<?xml version="1.0"?>
<opi:ServiceResponse xmlns:opi="http://www.nrf-arts.org/IXRetail/namespace"
    RequestType="GetCardCircuits" WorkstationID="POS1" RequestID="77" OverallResult="Success">
  <opi:Terminal TerminalID="52000001"/>
  <opi:CardCircuits>
    <opi:CardCircuit DisplayName="Visa">VISA</opi:CardCircuit>
    <opi:CardCircuit DisplayName="Mastercard">ECMC</opi:CardCircuit>
    <opi:CardCircuit DisplayName="Maestro">MAES</opi:CardCircuit>
  </opi:CardCircuits>
</opi:ServiceResponse>
"""

# No namespace at all.
CLOSING_RESPONSE = b"""<?xml version="1.0" encoding="UTF-8"?>
<ServiceResponse RequestType="ReconciliationWithClosure" WorkstationID="POS1"
    RequestID="900000001" OverallResult="Success">
  <Terminal TerminalID="52000001"/>
  <Reconciliation LanguageCode="nl">
    <TotalAmount NumberPayments="3" CardCircuit="VISA" Currency="EUR" PaymentType="Debit">37.50</TotalAmount>
    <TotalAmount NumberPayments="1" CardCircuit="ECMC" Currency="EUR" PaymentType="Debit">0.99</TotalAmount>
  </Reconciliation>
</ServiceResponse>
"""

REPEAT_LAST_MESSAGE_RESPONSE = b"""<?xml version="1.0" encoding="UTF-8"?>
<CardServiceResponse xmlns="http://www.nrf-arts.org/IXRetail/namespace"
    RequestType="RepeatLastMessage" WorkstationID="POS1" RequestID="8" OverallResult="Success">
  <OriginalHeader RequestType="CardFinancialAdvice" RequestID="7" WorkstationID="POS1"
      ApplicationSender="evpay" OverallResult="Success"/>
  <Terminal TerminalID="52000001" STAN="000125"/>
  <Tender>
    <TotalAmount Currency="EUR">12.34</TotalAmount>
    <Authorisation ApprovalCode="A1B2C3" CardCircuit="VISA" CardPAN="476173******0119"/>
  </Tender>
</CardServiceResponse>
"""

MIFARE_RESPONSE = b"""<?xml version="1.0" encoding="UTF-8"?>
<CardServiceResponse xmlns="http://www.nrf-arts.org/IXRetail/namespace"
    RequestType="CardSwipe" WorkstationID="POS1" RequestID="9" OverallResult="Success">
  <Terminal TerminalID="52000001"/>
  <CardValue><CardUID>04A1B2C3D4E5F6</CardUID></CardValue>
</CardServiceResponse>
"""

RECEIPT_DEVICE_REQUEST = b"""<?xml version="1.0" encoding="UTF-8"?>
<DeviceRequest xmlns="http://www.nrf-arts.org/IXRetail/namespace" RequestType="Output"
    ApplicationSender="CCV" WorkstationID="POS1" RequestID="4711" SequenceID="3"
    TerminalID="52000001">
  <Output OutDeviceTarget="PrinterReceipt" Complete="true">
    <TextLine Row="1" Column="1" Erase="true" CharSet="1">CARDHOLDER COPY</TextLine>
    <TextLine Row="2" Column="1">AMOUNT EUR 50.00</TextLine>
    <TextLine Row="3" Column="1" Erase="false"></TextLine>
  </Output>
  <Output OutDeviceTarget="CustomerDisplay">
    <TextLine Row="1" Column="1">APPROVED</TextLine>
  </Output>
</DeviceRequest>
"""

AUTHORISE_REQUEST = b"""<?xml version="1.0" encoding="UTF-8"?>
<CardServiceRequest xmlns="http://www.nrf-arts.org/IXRetail/namespace"
    RequestType="CardPreAuthorisation" ApplicationSender="evpay" WorkstationID="POS1"
    POPID="001" RequestID="123456789">
  <POSdata LanguageCode="nl">
    <POSTimeStamp>2026-11-25T18:00:00+01:00</POSTimeStamp>
    <PrinterStatus>Available</PrinterStatus>
    <E-JournalStatus>Available</E-JournalStatus>
  </POSdata>
  <TotalAmount Currency="EUR">50.00</TotalAmount>
</CardServiceRequest>
"""
