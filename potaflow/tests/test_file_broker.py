"""The embedded default broker delivers whole messages, or keeps what it cannot read.

CI saw a worker on the embedded defaults stop consuming: kombu's filesystem
transport let a consumer take a message file its producer had created but not
yet written, the worker died on the empty JSON, and the run stayed queued.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_errors
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from kombu import Connection

from core.file_broker import Transport

PRODUCERS = 4
PER_PRODUCER = 250
PADDING = 200_000  # a large message takes long enough to write for a poller to catch it half done


def folders(root: Path) -> dict[str, Any]:
    for name in ("queue", "processed", "control"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(root / "queue"),
        "data_folder_out": str(root / "queue"),
        "processed_folder": str(root / "processed"),
        "control_folder": str(root / "control"),
        "store_processed": False,
        "polling_interval": 0.01,
    }


def produce(options: dict[str, Any], first: int) -> None:
    with Connection(transport=Transport, transport_options=options) as conn:
        q = conn.SimpleQueue("race")
        for n in range(first, first + PER_PRODUCER):
            q.put({"n": n, "padding": "x" * PADDING})


def test_the_embedded_default_broker_is_this_transport():
    # Without a broker URL the settings choose the file broker; it must be the whole-message one.
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("the embedded default broker is in use only without CELERY_BROKER_URL")
    assert settings.CELERY_BROKER_TRANSPORT == "core.file_broker:Transport"
    from celery import current_app

    with current_app.connection_for_write() as conn:
        assert isinstance(conn.transport, Transport)


def test_a_consumer_racing_a_producer_gets_every_message_whole(tmp_path):
    options = folders(tmp_path)
    options["polling_interval"] = 0.001
    context = multiprocessing.get_context("spawn")
    producers = [context.Process(target=produce, args=(options, k * PER_PRODUCER)) for k in range(PRODUCERS)]
    for producer in producers:
        producer.start()
    seen: list[int] = []
    with Connection(transport=Transport, transport_options=options) as conn:
        q = conn.SimpleQueue("race")
        while len(seen) < PRODUCERS * PER_PRODUCER:
            try:
                message = q.get(timeout=30)
            except queue_errors.Empty:
                break
            seen.append(message.payload["n"])
            message.ack()
    for producer in producers:
        producer.join(timeout=30)
        assert producer.exitcode == 0
    assert sorted(seen) == list(range(PRODUCERS * PER_PRODUCER))
    assert not (tmp_path / "corrupt").exists(), "no message was unreadable"
    assert not list((tmp_path / "queue").glob("*")), "every message was taken"


def test_an_unreadable_message_file_is_kept_aside_and_the_next_one_delivered(tmp_path, caplog):
    options = folders(tmp_path)
    with Connection(transport=Transport, transport_options=options) as conn:
        q = conn.SimpleQueue("mixed")
        (tmp_path / "queue" / "0_garbage.mixed.msg").write_bytes(b"")  # an empty file sorts first
        q.put({"ok": True})
        message = q.get(timeout=5)
        assert message.payload == {"ok": True}
        message.ack()
    kept = tmp_path / "corrupt" / "0_garbage.mixed.msg"
    assert kept.exists(), "the unreadable file is kept for a person"
    assert "0_garbage.mixed.msg" in caplog.text and "mixed" in caplog.text


def test_a_message_being_written_is_invisible_to_consumers(tmp_path):
    options = folders(tmp_path)
    with Connection(transport=Transport, transport_options=options) as conn:
        q = conn.SimpleQueue("half")
        (tmp_path / "queue" / "0_inflight.half.msg.partial").write_bytes(b'{"bod')
        with pytest.raises(queue_errors.Empty):
            q.get(timeout=0.3)
        q.put({"n": 1})
        message = q.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
    assert (tmp_path / "queue" / "0_inflight.half.msg.partial").read_bytes() == b'{"bod'
