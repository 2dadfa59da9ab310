"""Database connections under the per-process pool (settings: DB_POOL_MAX_SIZE)."""

from django.db import connection


def release_pooled_connection() -> None:
    """Hand this thread's connection back to the pool before a long wait.

    A thread keeps the connection it took until something closes it: a worker thread waiting
    minutes for a driver's card, or an OCPP server thread between two charger messages, would
    hold one of the pool's few for nothing. Outside a transaction only (nothing is open then);
    the next query takes a connection again. Without a pool, closing would only cost a new
    server process on the next query: kept then."""
    if getattr(connection, "pool", None) is not None and not connection.in_atomic_block:
        connection.close()
