"""Patience names what a step has been waiting for, per thread: Kafka and the database at once."""

from __future__ import annotations

import threading
import time

from consumers.kafka_source import Patience


def test_a_hanging_database_write_is_named_while_the_poller_comes_and_goes() -> None:
    said: list[str] = []
    stop = threading.Event()
    patience = Patience(said.append, stop, slow=0.2)
    writing = threading.Event()

    def writer() -> None:
        with patience.watch("the database"):
            writing.set()
            time.sleep(0.7)  # the database does not answer

    thread = threading.Thread(target=writer)
    thread.start()
    writing.wait()
    for _ in range(5):  # meanwhile the polling thread's quick Kafka steps start and end
        with patience.watch("Kafka"):
            time.sleep(0.01)
    thread.join()
    stop.set()

    assert any(s.startswith("waiting for the database: no answer for") for s in said), said
    assert not any("Kafka" in s for s in said), said
