"""The O.P.I. (OPI-NL) protocol used by CCV terminals: framing, messages, client, channel 1.

Pure Python, no Django. Modules:

- ``errors``: ProtocolError and its subclasses (everything a peer can get wrong).
- ``framing``: 4-byte length-prefixed frames (sync and asyncio readers, incremental decoder).
- ``messages``: dataclasses for every request/response, ``encode()`` and ``parse()``.
- ``profile``: TerminalProfile, per-terminal addresses, timeouts and request-type names.
- ``client``: OpiClient, one synchronous method per operation, returning OpiResult.
- ``device_channel``: channel-1 handling (DeviceChannelServer, RecordingDeviceHandler).
- ``decode``: captured message -> JSON-ready dict (``manage.py opi_decode``).

The wire format is described in shared/docs/opi-nl.md; the internal contract with the
emulator in docs/opi-contract.md.
"""
