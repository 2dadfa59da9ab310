"""Exceptions raised by the O.P.I. library.

Everything that can go wrong with bytes received from a peer is a ``ProtocolError``
subclass, so callers handling untrusted input need exactly one ``except`` clause.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class: the peer sent something we cannot use."""


class FramingError(ProtocolError):
    """The 4-byte length framing is broken."""


class FrameTooLarge(FramingError):
    """A frame announces more bytes than we are willing to buffer."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class TruncatedFrame(FramingError):
    """The stream ended in the middle of a frame."""


class ConnectionClosed(FramingError):
    """The peer closed the connection cleanly between frames."""


class MalformedMessage(ProtocolError):
    """Not well-formed XML, an unexpected root element or an invalid value."""


class UnsafeXML(ProtocolError):
    """The document uses a DTD, entity declarations or external references.

    Such documents are rejected before anything is expanded (XXE, billion laughs).
    """


class MissingField(ProtocolError):
    """Mandatory elements or attributes are absent; ``fields`` names every one of them."""

    def __init__(self, fields: list[str], context: str = "") -> None:
        where = f" in {context}" if context else ""
        super().__init__(f"missing mandatory field(s){where}: {', '.join(fields)}")
        self.fields = list(fields)
        self.context = context


class ProfileError(ValueError):
    """A terminal profile is invalid; ``field`` names the offending setting.

    Deliberately not a ProtocolError: it is a configuration mistake, not a peer's.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
