import asyncio
import socket
import struct

import pytest

from terminals.opi.errors import ConnectionClosed, FrameTooLarge, ProtocolError, TruncatedFrame
from terminals.opi.framing import (
    MAX_FRAME_BYTES,
    FrameDecoder,
    encode_frame,
    has_length_prefix,
    read_frame,
    read_frame_async,
)


def test_encode_frame_prefixes_the_byte_length_big_endian():
    assert encode_frame("é".encode()) == b"\x00\x00\x00\x02\xc3\xa9"


def test_encode_frame_refuses_oversize_payloads():
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * (MAX_FRAME_BYTES + 1))


def test_decoder_reassembles_a_frame_fed_one_byte_at_a_time():
    decoder = FrameDecoder()
    frames = []
    for byte in encode_frame(b"<a/>"):
        frames += decoder.feed(bytes([byte]))
    assert frames == [b"<a/>"]
    assert decoder.pending == 0


def test_decoder_returns_several_frames_from_one_read_and_keeps_the_rest():
    data = encode_frame(b"<a/>") + encode_frame(b"<b/>") + encode_frame(b"<c/>")[:5]
    decoder = FrameDecoder()
    assert decoder.feed(data) == [b"<a/>", b"<b/>"]
    assert decoder.pending == 5
    assert decoder.feed(b"c/>") == [b"<c/>"]


def test_decoder_accepts_an_empty_frame():
    assert FrameDecoder().feed(b"\x00\x00\x00\x00") == [b""]


def test_decoder_rejects_an_oversize_length_before_buffering_the_body():
    decoder = FrameDecoder(max_size=10)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(struct.pack(">I", 11))
    assert info.value.size == 11
    assert decoder.pending == 0


def test_decoder_eof_inside_a_frame_is_truncation():
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"<abc/>")[:-1])
    with pytest.raises(TruncatedFrame):
        decoder.eof()


def test_decoder_eof_between_frames_is_fine():
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"<a/>"))
    decoder.eof()


def test_has_length_prefix_tells_captures_from_bare_xml():
    assert has_length_prefix(encode_frame(b"<a/>"))
    assert not has_length_prefix(b"<?xml version='1.0'?><a/>")
    assert not has_length_prefix(b"ab")


def _pair():
    left, right = socket.socketpair()
    left.settimeout(2)
    right.settimeout(2)
    return left, right


def test_read_frame_reads_consecutive_frames_from_a_socket():
    left, right = _pair()
    with left, right:
        right.sendall(encode_frame(b"<a/>") + encode_frame(b"<b/>"))
        assert read_frame(left) == b"<a/>"
        assert read_frame(left) == b"<b/>"


def test_read_frame_clean_close_is_connection_closed():
    left, right = _pair()
    with left:
        right.close()
        with pytest.raises(ConnectionClosed):
            read_frame(left)


@pytest.mark.parametrize("cut", [2, 6])
def test_read_frame_close_inside_a_frame_is_truncated(cut):
    left, right = _pair()
    with left:
        right.sendall(encode_frame(b"<abcd/>")[:cut])
        right.close()
        with pytest.raises(TruncatedFrame):
            read_frame(left)


def test_read_frame_refuses_oversize_length():
    left, right = _pair()
    with left, right:
        right.sendall(struct.pack(">I", 100))
        with pytest.raises(FrameTooLarge):
            read_frame(left, max_size=99)


def _reader_with(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_read_frame_async_handles_frames_close_and_truncation():
    async def scenario():
        reader = _reader_with(encode_frame(b"<a/>"))
        assert await read_frame_async(reader) == b"<a/>"
        with pytest.raises(ConnectionClosed):
            await read_frame_async(reader)
        with pytest.raises(TruncatedFrame):
            await read_frame_async(_reader_with(b"\x00\x00"))
        with pytest.raises(TruncatedFrame):
            await read_frame_async(_reader_with(encode_frame(b"<abc/>")[:-1]))
        with pytest.raises(FrameTooLarge):
            await read_frame_async(_reader_with(struct.pack(">I", 50)), max_size=10)

    asyncio.run(scenario())


def test_every_framing_error_is_a_protocol_error():
    for error in (ConnectionClosed, TruncatedFrame, FrameTooLarge):
        assert issubclass(error, ProtocolError)
