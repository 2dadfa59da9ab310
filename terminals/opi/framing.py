"""Length-prefixed framing used on both O.P.I. channels.

Every message is a 4-byte unsigned big-endian byte count followed by the XML document.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from .errors import ConnectionClosed, FrameTooLarge, TruncatedFrame

# Real messages are a few kilobytes; the limit only stops a corrupt or hostile length
# prefix from making us allocate gigabytes.
MAX_FRAME_BYTES = 1024 * 1024
# Channel 1 carries displays and receipts: a long receipt is a few kilobytes, so the device
# channel server refuses anything above this instead of buffering a hostile megabyte per
# connection. Channel 0 keeps MAX_FRAME_BYTES.
DEVICE_MAX_FRAME_BYTES = 64 * 1024
HEADER_BYTES = 4
_HEADER = struct.Struct(">I")


def encode_frame(xml: bytes, max_size: int = MAX_FRAME_BYTES) -> bytes:
    """Prefix ``xml`` with its length."""
    if len(xml) > max_size:
        raise FrameTooLarge(len(xml), max_size)
    return _HEADER.pack(len(xml)) + xml


def has_length_prefix(data: bytes) -> bool:
    """True when ``data`` is exactly one frame (used to tell captures from bare XML)."""
    if len(data) < HEADER_BYTES:
        return False
    return _HEADER.unpack_from(data)[0] == len(data) - HEADER_BYTES


class FrameDecoder:
    """Incremental decoder: feed whatever ``recv`` returned, get complete frames back.

    Reassembles frames split over several reads and returns several frames from one read.
    The buffer only ever holds what arrived (never the announced size), and an oversize
    length is refused as soon as its 4-byte header is in, before any of the body is read.
    """

    def __init__(self, max_size: int = MAX_FRAME_BYTES) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return len(self._buffer)

    @property
    def in_frame(self) -> bool:
        """True while part of a frame (header or body) has arrived but not all of it."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        buffer = self._buffer
        offset = 0
        while len(buffer) - offset >= HEADER_BYTES:
            (size,) = _HEADER.unpack_from(buffer, offset)
            if size > self.max_size:
                # The stream cannot be resynchronised after a bad length: drop it all.
                self._buffer = bytearray()
                raise FrameTooLarge(size, self.max_size)
            end = offset + HEADER_BYTES + size
            if len(buffer) < end:
                break
            frames.append(bytes(buffer[offset + HEADER_BYTES : end]))
            offset = end
        if offset:
            del buffer[:offset]
        return frames

    def eof(self) -> None:
        """Call when the peer closed; raises TruncatedFrame if a frame was cut off."""
        if self._buffer:
            pending = len(self._buffer)
            self._buffer = bytearray()
            raise TruncatedFrame(f"connection closed with {pending} bytes of an incomplete frame")


def _recv_exactly(sock: socket.socket, count: int, started: bool) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            if not chunks and not started:
                raise ConnectionClosed("peer closed the connection")
            raise TruncatedFrame(f"connection closed after {len(chunks)} of {count} bytes")
        chunks += chunk
    return bytes(chunks)


def read_frame(sock: socket.socket, max_size: int = MAX_FRAME_BYTES) -> bytes:
    """Read one frame from a blocking socket.

    Raises ConnectionClosed on a clean close between frames, TruncatedFrame on a close
    inside one, FrameTooLarge for an oversize length. A socket timeout propagates as
    ``TimeoutError`` (the frame boundary is then lost: close the socket).
    """
    header = _recv_exactly(sock, HEADER_BYTES, started=False)
    (size,) = _HEADER.unpack(header)
    if size > max_size:
        raise FrameTooLarge(size, max_size)
    return _recv_exactly(sock, size, started=True)


async def read_frame_async(reader: asyncio.StreamReader, max_size: int = MAX_FRAME_BYTES) -> bytes:
    """Asyncio twin of :func:`read_frame`."""
    try:
        header = await reader.readexactly(HEADER_BYTES)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ConnectionClosed("peer closed the connection") from None
        raise TruncatedFrame("connection closed inside a frame header") from None
    (size,) = _HEADER.unpack(header)
    if size > max_size:
        raise FrameTooLarge(size, max_size)
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise TruncatedFrame(
            f"connection closed after {len(exc.partial)} of {size} bytes"
        ) from None
