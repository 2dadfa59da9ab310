"""The embedded broker (evpay/broker.py): files appear whole, a bad file is set aside instead of
stopping the worker, and what races on the filesystem transport is off."""

import pytest
from django.conf import settings
from kombu import Connection, Exchange, Queue

from evpay.broker import transport_for
from evpay.celery import app


@pytest.fixture
def conn(tmp_path):
    for sub in ("out", "processed", "control"):
        (tmp_path / sub).mkdir()
    options = {
        "data_folder_in": str(tmp_path / "out"),
        "data_folder_out": str(tmp_path / "out"),
        "processed_folder": str(tmp_path / "processed"),
        "control_folder": str(tmp_path / "control"),
    }
    with Connection(transport="evpay.broker:Transport", transport_options=options) as conn:
        yield conn


def _queue(name):
    # A name per test: the transport keeps its bindings per process, whatever the folder.
    return Queue(name, Exchange(name, "direct"), routing_key=name)


def test_a_message_goes_through_and_leaves_no_file_behind(conn, tmp_path):
    queue = conn.SimpleQueue(_queue("q1"))
    queue.put({"n": 1})
    assert queue.get(timeout=2).payload == {"n": 1}
    queue.close()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []
    assert [p.name for p in (tmp_path / "processed").iterdir()] == []


def test_a_message_file_that_does_not_parse_is_set_aside_and_the_next_one_delivered(conn, tmp_path):
    queue = conn.SimpleQueue(_queue("q2"))
    # What stock kombu can leave: a file created but not yet (or never) written.
    (tmp_path / "out" / "0000_empty.q2.msg").write_bytes(b"")
    queue.put({"n": 2})
    assert queue.get(timeout=2).payload == {"n": 2}
    queue.close()
    assert [p.name for p in (tmp_path / "processed").iterdir()] == ["0000_empty.q2.msg.corrupt"]


def test_an_exchange_table_that_does_not_parse_is_rebuilt_not_fatal(conn, tmp_path):
    (tmp_path / "control" / "q3.exchange").write_bytes(b"")
    queue = conn.SimpleQueue(_queue("q3"))
    queue.put({"n": 3})
    assert queue.get(timeout=2).payload == {"n": 3}
    queue.close()
    assert '"q3"' in (tmp_path / "control" / "q3.exchange").read_text()


def test_the_transport_follows_the_url():
    assert transport_for("filesystem://") == "evpay.broker:Transport"
    assert transport_for("redis://127.0.0.1:6379/0") == "redis"
    assert transport_for("sqla+sqlite:///x.db") == "sqla"


@pytest.mark.skipif(
    not settings.CELERY_BROKER_URL.startswith("filesystem://"), reason="embedded broker only"
)
def test_the_embedded_broker_runs_without_remote_control_or_events():
    assert app.conf.broker_transport == "evpay.broker:Transport"
    assert app.conf.worker_enable_remote_control is False
    assert app.conf.worker_send_task_events is False
