import pytest


@pytest.fixture
def enqueued_settle(monkeypatch):
    """Settle tasks the guard enqueues are recorded, and run by the test itself."""
    from sessions import tasks

    calls = []
    monkeypatch.setattr(tasks.settle_session_task, "delay", lambda *a: calls.append(a))
    return calls
