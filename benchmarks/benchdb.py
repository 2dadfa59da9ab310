"""What the database benchmarks share: their own migrated database, and bulk INSERT ... SELECT.

Imported after ``django.setup()`` by the scripts beside it (they put the repo on sys.path).
"""

from __future__ import annotations

from contextlib import contextmanager

from django.db import connection, models


@contextmanager
def bench_database(name: str, *, keep: bool = False):
    """Create (migrated) and use the database ``name``, the test database of DATABASE_URL.

    ``keep`` leaves it in place afterwards and reuses it when it exists (a generated million
    sessions take minutes to write); otherwise it is dropped at the end. serialize=False: a
    kept database of 1 M sessions is not read back into a string.
    """
    connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=keep, serialize=False)
    try:
        yield
    finally:
        if not keep:
            connection.close()
            # Connections a benchmark's own threads or children left behind would make the
            # DROP fail ("being accessed by other users").
            with connection._nodb_cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    [name],
                )
            connection.creation.destroy_test_db(old_name, verbosity=0)


def insert_select(model, source: str, values: dict[str, str], params=None) -> int:
    """One INSERT INTO model's table SELECT ... FROM ``source``; ``values`` gives columns.

    Every other column gets its field's blank value ('' / 0 / false / '{}' / NULL), so a
    field added to the model later does not break the scripts. The SQL is our own constants;
    without ``params`` nothing is interpolated and ``%`` is the modulo operator, with them
    write it ``%%``."""
    columns, expressions = [], []
    for field in model._meta.concrete_fields:
        if isinstance(field, models.AutoField):
            continue
        columns.append(field.column)
        if field.column in values:
            expressions.append(values[field.column])
        elif field.null:
            expressions.append("NULL")
        elif isinstance(field, models.BooleanField):
            expressions.append("false")
        elif isinstance(field, models.JSONField):
            expressions.append("'{}'::jsonb")
        elif isinstance(field, (models.IntegerField, models.DecimalField)):
            expressions.append("0")
        else:
            expressions.append("''")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) "  # noqa: S608
            f"SELECT {', '.join(expressions)} FROM {source}",
            params,
        )
        return cursor.rowcount
