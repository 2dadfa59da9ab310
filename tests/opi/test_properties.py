"""Property tests: untrusted bytes give a message or a ProtocolError, never anything else."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terminals.opi import messages as m
from terminals.opi.errors import ProtocolError
from terminals.opi.framing import FrameDecoder, encode_frame

from . import samples

SAMPLES = [
    samples.AUTHORISATION_RESPONSE,
    samples.DECLINED_RESPONSE_LATIN1,
    samples.MISDECLARED_LATIN1,
    samples.PREFIXED_BRANDS,
    samples.CLOSING_RESPONSE,
    samples.REPEAT_LAST_MESSAGE_RESPONSE,
    samples.MIFARE_RESPONSE,
    samples.RECEIPT_DEVICE_REQUEST,
    samples.AUTHORISE_REQUEST,
]


def _parse_or_protocol_error(data: bytes) -> None:
    try:
        message = m.parse(data)
    except ProtocolError:
        return
    assert message.root in m.ROOTS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_to_a_message_or_a_protocol_error(data):
    _parse_or_protocol_error(data)


@st.composite
def mutated_samples(draw):
    """Real documents with bytes flipped, cut, or inserted: near-misses find more bugs."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position : position + draw(st.integers(1, 20))]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_samples())
def test_mutated_real_messages_parse_or_raise_protocol_errors(data):
    _parse_or_protocol_error(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_frame_decoder_on_arbitrary_chunks_yields_frames_or_protocol_errors(chunks):
    decoder = FrameDecoder(max_size=1000)
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert isinstance(frame, bytes)
                _parse_or_protocol_error(frame)
        decoder.eof()
    except ProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=4), st.data())
def test_frames_split_anywhere_reassemble_exactly(documents, data):
    stream = b"".join(encode_frame(d) for d in documents)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    frames = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        frames += decoder.feed(stream[previous:cut])
        previous = cut
    assert frames == documents


xml_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff").filter(
        lambda c: c in "\t\n\r" or ord(c) >= 0x20
    ),
    max_size=30,
)
short_id = st.from_regex(r"[0-9]{1,9}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    request_id=short_id,
    workstation=xml_text.filter(bool),
    minor=st.integers(0, 10**12),
    currency=st.sampled_from(["EUR", "JPY", "KWD", "GBP"]),
    text=xml_text,
    encoding=st.sampled_from(["UTF-8", "ISO-8859-1"]),
)
def test_generated_messages_round_trip(request_id, workstation, minor, currency, text, encoding):
    messages = [
        m.CardServiceRequest(
            "CardFinancialAdvice",
            request_id,
            workstation,
            amount=m.Amount(minor, currency),
            original_transaction=m.OriginalTransaction(
                "T" + request_id, request_id, approval_code=text or None
            ),
        ),
        m.CardServiceResponse(
            "CardPreAuthorisation",
            request_id,
            "Success",
            tender=m.Tender(m.Amount(minor, currency), m.Authorisation(card_pan=text)),
            private_data=m.PrivateData(error_text=text),
        ),
        m.DeviceRequest("Output", request_id, outputs=[m.Output("Printer", [m.TextLine(text, 1)])]),
    ]
    for message in messages:
        assert m.parse(m.encode(message, encoding)) == message
