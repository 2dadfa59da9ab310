"""Enqueue the charging tasks after the current transaction commits.

Services call these instead of importing the tasks: the tasks call the services, so this
module is the one place that closes that loop, importing the tasks when first used.
"""

from django.db import transaction


def _tasks():
    from sessions import tasks  # the tasks module imports the services that import this one

    return tasks


def authorise(session_pk: int) -> None:
    transaction.on_commit(lambda: _tasks().authorise_session_task.delay(session_pk))


def settle(session_pk: int) -> None:
    transaction.on_commit(lambda: _tasks().settle_session_task.delay(session_pk))


def recover(tx_pk: int) -> None:
    transaction.on_commit(lambda: _tasks().recover_transaction_task.delay(tx_pk))


def stop_by_card(terminal_pk: int) -> None:
    transaction.on_commit(lambda: _tasks().stop_by_card_task.delay(terminal_pk))
