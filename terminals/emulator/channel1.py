"""Channel 1 as seen from the terminal: it sends DeviceRequests and waits for DeviceResponses.

Two arrangements, because installations differ (shared/docs/opi-nl.md):

- ``terminal``: the terminal listens on its channel-1 port; the POS connects and keeps the
  connection. The most recent connection is the one used.
- ``pos``: the POS listens; the terminal connects for each channel-0 request that needs
  channel 1 and closes when the request is over.

A device request that cannot be delivered, or whose answer does not come in time, is reported as
unacknowledged (``None``); what that means (abort, reprint pending) is the terminal's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from terminals.opi.errors import ProtocolError
from terminals.opi.framing import encode_frame, read_frame_async

log = logging.getLogger("terminals.emulator.channel1")

#: Parses a DeviceResponse frame into (RequestID, OverallResult).
ResponseParser = Callable[[bytes], tuple[str, str]]


class _Link:
    """One open channel-1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.broken = False
        # One exchange at a time: a display sent after a response (minimal dialect) may overlap
        # the next request's device requests, and two readers on one stream would fight.
        self._lock = asyncio.Lock()

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):
            self.writer.close()

    async def exchange(
        self, frame: bytes, request_id: str, timeout: float, parse: ResponseParser
    ) -> str | None:
        async with self._lock:
            if self.broken:
                return None  # broken while this exchange waited its turn
            return await self._exchange(frame, request_id, timeout, parse)

    async def _exchange(
        self, frame: bytes, request_id: str, timeout: float, parse: ResponseParser
    ) -> str | None:
        try:
            self.writer.write(encode_frame(frame))
            await self.writer.drain()
            async with asyncio.timeout(timeout):
                while True:
                    answer_id, result = parse(await read_frame_async(self.reader))
                    if answer_id == request_id:
                        return result
                    # An answer to an earlier, timed-out request: skip it.
                    log.debug("ignoring DeviceResponse %s (waiting for %s)", answer_id, request_id)
        except (TimeoutError, ProtocolError, ConnectionError, OSError) as exc:
            # A timeout may have cut a frame in half: the stream is unusable from here on.
            log.info("channel-1 exchange failed: %r", exc)
            self.close()
            return None
        except asyncio.CancelledError:
            # Cancelled mid-exchange (the open request was aborted): same reasoning.
            self.close()
            raise


class Channel1Session:
    """Channel-1 use during one channel-0 request."""

    def __init__(self, channel: Channel1) -> None:
        self._channel = channel
        self._link: _Link | None = None
        self._opened = False

    async def exchange(self, frame: bytes, request_id: str, timeout: float) -> str | None:
        link = await self._get_link(timeout)
        if link is None:
            return None
        return await link.exchange(frame, request_id, timeout, self._channel.parse)

    async def _get_link(self, timeout: float) -> _Link | None:
        if self._link is not None and not self._link.broken:
            return self._link
        if self._opened and self._channel.arrangement == "pos":
            return None  # one connection attempt per request is enough
        self._opened = True
        self._link = await self._channel.acquire(timeout)
        return self._link

    def close(self) -> None:
        if self._channel.arrangement == "pos" and self._link is not None:
            self._link.close()
        self._link = None


class Channel1:
    def __init__(
        self,
        arrangement: str,
        parse: ResponseParser,
        pos_host: str | None = None,
        pos_port: int | None = None,
        connect_grace: float = 1.0,
    ) -> None:
        if arrangement not in ("terminal", "pos"):
            raise ValueError("arrangement must be 'terminal' or 'pos'")
        if arrangement == "pos" and (not pos_host or not pos_port):
            raise ValueError("arrangement 'pos' needs the POS host and port")
        self.arrangement = arrangement
        self.parse = parse
        self.pos_host = pos_host
        self.pos_port = pos_port
        self.connect_grace = connect_grace
        self._peer: _Link | None = None
        self._peer_arrived = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._peer is not None and not self._peer.broken

    def session(self) -> Channel1Session:
        return Channel1Session(self)

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Server callback for the terminal's channel-1 port (arrangement ``terminal``)."""
        if self._peer is not None:
            self._peer.close()  # the POS reconnected: the newest connection wins
        self._peer = _Link(reader, writer)
        self._peer_arrived.set()
        self._peer_arrived = asyncio.Event()

    async def acquire(self, timeout: float) -> _Link | None:
        if self.arrangement == "pos":
            try:
                async with asyncio.timeout(timeout):
                    reader, writer = await asyncio.open_connection(self.pos_host, self.pos_port)
            except (OSError, TimeoutError) as exc:
                log.info("cannot reach the POS channel-1 listener: %r", exc)
                return None
            return _Link(reader, writer)
        if self.connected:
            return self._peer
        # The POS may connect a moment after sending its channel-0 request: give it a grace.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(self.connect_grace, timeout)):
                while not self.connected:
                    await self._peer_arrived.wait()
        return self._peer if self.connected else None

    def close(self) -> None:
        if self._peer is not None:
            self._peer.close()
            self._peer = None
