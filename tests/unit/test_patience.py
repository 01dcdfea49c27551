"""Patience names what a step has been waiting for, per thread: Kafka and the database at once;
and every wait of a PostgreSQL store for a connection, through the store's retries."""

from __future__ import annotations

import re
import threading
import time
from types import SimpleNamespace
from typing import cast

import psycopg_pool
import pytest
from eventsourcing.postgres import PostgresDatastore

from consumers.patience import Patience
from infra.store.postgres import tell_connection_waits


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


def test_a_watch_within_another_of_its_thread_is_named_instead_until_it_ends() -> None:
    said: list[str] = []
    stop = threading.Event()
    patience = Patience(said.append, stop, slow=0.2)
    with patience.watch("the step") as outer:
        with patience.watch("its fencing", told="{}s so far") as inner:
            time.sleep(0.3)
        time.sleep(0.3)
    stop.set()

    assert (outer, inner) == (True, False)
    assert said[0].startswith("waiting for its fencing: "), said
    assert said[0].endswith("s so far"), said
    assert said[-1].startswith("waiting for the step: no answer for"), said


def test_threads_waiting_for_the_same_thing_are_named_once_by_the_longest_wait() -> None:
    said: list[str] = []
    stop = threading.Event()
    patience = Patience(said.append, stop, slow=0.2)

    def reader() -> None:
        with patience.watch("the database", since=time.monotonic() - 1):
            time.sleep(0.4)  # outlasts the writer's

    thread = threading.Thread(target=reader)
    thread.start()
    with patience.watch("the database"):  # the writer, since now
        time.sleep(0.3)
    thread.join()
    stop.set()

    assert said, said
    assert all(s == "waiting for the database: no answer for 1s" for s in said), said


class _StoppedServer:
    """A connection pool whose server is down for the first `failures` requests: each waits
    out the pool's timeout (here 0.15 s) and fails as psycopg_pool does. The others wait
    `answers_after` seconds for a connection (a server that is starting)."""

    def __init__(self, failures: int, answers_after: float = 0.0) -> None:
        self.failures = failures
        self.answers_after = answers_after

    def getconn(self, timeout: float | None = None) -> str:
        if self.failures:
            self.failures -= 1
            time.sleep(0.15)
            raise psycopg_pool.PoolTimeout("couldn't get a connection after 0.15 sec")
        time.sleep(self.answers_after)
        return "connection"


def _store_retry(pool: _StoppedServer, attempts: int) -> str:
    """The store's retry (`retry(..., max_attempts=10, wait=0.2)`), shortened."""
    for attempt in range(1, attempts + 1):
        try:
            return pool.getconn()
        except psycopg_pool.PoolTimeout:
            if attempt == attempts:
                raise
            time.sleep(0.01)
    raise AssertionError("unreachable")


def _watched(failures: int,
             answers_after: float = 0.0) -> tuple[_StoppedServer, Patience, list[str]]:
    said: list[str] = []
    patience = Patience(said.append, threading.Event(), slow=0.2)
    pool = _StoppedServer(failures, answers_after)
    tell_connection_waits(cast(PostgresDatastore, SimpleNamespace(pool=pool)),
                          "PostgreSQL at db:5432/billing", patience)
    return pool, patience, said


def test_a_wait_for_postgresql_is_named_across_the_store_retries_and_its_end_said() -> None:
    pool, patience, said = _watched(failures=4)  # each attempt is shorter than `slow`

    assert _store_retry(pool, attempts=10) == "connection"
    patience.stop.set()

    waits = [s for s in said if s.startswith("waiting for PostgreSQL at db:5432/billing: "
                                             "no answer for ")]
    assert len(waits) >= 2, said  # counted from the first failed attempt, not each one's
    assert re.fullmatch(r"PostgreSQL at db:5432/billing is back \(after [01]s\)", said[-1]), said


def test_the_end_of_a_wait_of_two_threads_is_said_once() -> None:
    pool, patience, said = _watched(failures=0, answers_after=0.3)  # a run's reader and writer
    threads = [threading.Thread(target=_store_retry, args=(pool, 1)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    patience.stop.set()

    assert [s for s in said if "is back" in s] == [
        "PostgreSQL at db:5432/billing is back (after 0s)"], said


def test_giving_up_on_postgresql_says_for_how_long_it_waited() -> None:
    pool, patience, said = _watched(failures=10)

    with pytest.raises(psycopg_pool.PoolTimeout) as raised:
        _store_retry(pool, attempts=4)
    patience.stop.set()

    assert str(raised.value) == "no connection to PostgreSQL at db:5432/billing for 1s"
    assert not any("is back" in s for s in said), said


def test_a_prompt_connection_says_nothing() -> None:
    pool, patience, said = _watched(failures=0)

    assert _store_retry(pool, attempts=1) == "connection"
    patience.stop.set()

    assert said == []
