"""The embedded broker: kombu's filesystem transport, made safe for several processes.

Stock kombu (5.7) creates a message file, then locks it, then writes it; a consumer on another
process renames files away without taking that lock, so it can read a file that is still
empty and die with ``JSONDecodeError('Expecting value: line 1 column 1 (char 0)')`` (an
"unrecoverable error" that stops the Celery worker). It also moves a consumed file to the
system temporary folder, which may be another file system: then two consumers can both copy
one message, or copy it before its bytes arrive and lose it. The exchange tables under the
control folder are created with ``open("wb")`` (truncate, then lock), so a reader can catch
them empty as well.

Here every file becomes visible only when complete (written beside it, then ``os.replace``),
a consumer claims a message with one ``os.rename`` on the same file system (only one consumer
can win), and a file that still does not parse is moved aside and logged, never fatal.
``benchmarks/broker_stress.py`` hammers both variants; the figures are in the README.

Used when CELERY_BROKER_URL is ``filesystem://`` (settings set ``CELERY_BROKER_TRANSPORT``).
Redis or RabbitMQ stay the production choice.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from pathlib import Path
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

# Temporary names start with a dot: kombu's own listing, _size and _purge split on the first
# dot and compare the rest with "<queue>.msg", which such a name never matches.
_TMP_PREFIX = ".tmp-"


def _write_atomically(path: Path | str, data: bytes) -> None:
    """The file at ``path`` holds either its old content or all of ``data``, never less."""
    path = Path(path)
    tmp = path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class Channel(filesystem.Channel):
    @contextlib.contextmanager
    def _table_lock(self, exchange):
        """Serialises read-modify-write of one exchange table across processes (a lock file
        beside it, so readers never wait and never see a half-written table)."""
        self.control_folder.mkdir(parents=True, exist_ok=True)
        lock_path = self._exchange_file(exchange).with_suffix(".lock")
        with open(lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _read_table(self, exchange) -> list:
        file = self._exchange_file(exchange)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc
        try:
            return [filesystem.exchange_queue_t(*q) for q in loads(raw.decode())]
        except ValueError:
            # Only a writer of the stock transport can leave this; start the table afresh
            # rather than stop every process that publishes.
            log.error("broker: exchange table %s does not parse; treating it as empty", file)
            return []

    def get_table(self, exchange):
        return self._read_table(exchange)

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_lock(exchange):
            queues = self._read_table(exchange)
            if entry not in queues:
                queues.insert(0, entry)
                _write_atomically(self._exchange_file(exchange), dumps(queues).encode())

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs):
        # The virtual base class forgets the binding in this process; the table is ours.
        filesystem.virtual.Channel._delete(
            self, queue, exchange, routing_key, pattern, *args, **kwargs
        )
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_lock(exchange):
            queues = self._read_table(exchange)
            if entry in queues:
                queues.remove(entry)
                _write_atomically(self._exchange_file(exchange), dumps(queues).encode())

    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        try:
            _write_atomically(os.path.join(self.data_folder_out, name), dumps(payload).encode())
        except OSError as exc:
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc

    def _claim_folder(self) -> str:
        # Same file system as the queue folder, so the claim is one atomic rename.
        folder = self.processed_folder
        os.makedirs(folder, exist_ok=True)
        return folder

    def _get(self, queue):
        wanted = f"{queue}.msg"
        claim_folder = self._claim_folder()
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.partition(".")[2] != wanted:
                continue
            claimed = os.path.join(claim_folder, filename)
            try:
                os.rename(os.path.join(self.data_folder_in, filename), claimed)
            except OSError:
                continue  # another consumer took it first
            try:
                with open(claimed, "rb") as fh:
                    payload = fh.read()
            except OSError as exc:
                raise ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            try:
                message = loads(payload.decode())
            except ValueError:
                corrupt = claimed + ".corrupt"
                os.replace(claimed, corrupt)
                log.error("broker: message %s does not parse; kept as %s", filename, corrupt)
                continue
            if not self.store_processed:
                with contextlib.suppress(OSError):
                    os.remove(claimed)
            return message
        raise Empty()


def transport_for(url: str) -> str:
    """The kombu transport for a broker URL as settings configure it. Celery's
    ``broker_transport`` wins over any URL's scheme, so a caller that connects to a URL other
    than the configured one (the health check, tests) names the transport itself."""
    scheme = url.partition("://")[0]
    if scheme == "filesystem":
        return "evpay.broker:Transport"
    return scheme.partition("+")[0]


class Transport(filesystem.Transport):
    Channel = Channel
    # Its own state: a process using both variants must not share bindings between them.
    global_state = filesystem.virtual.BrokerState()
    driver_type = "filesystem"
    driver_name = "filesystem (atomic)"

    @property
    def default_connection_params(self):
        # No host to fall back to: spares every process kombu's "No hostname was supplied" warning.
        return {"port": self.default_port}
